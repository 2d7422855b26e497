"""The viewer in real headless Chromium: log in with a token, open the worklist, open the top study, toggle
the AI outlines, record a review; the study page's screenshot goes to docs/viewer_study.png."""

from __future__ import annotations

import json
import os
import shutil

import httpx
import pytest

from pipelines.paths import REPO_ROOT
from tests.serving.conftest import auth

pytestmark = pytest.mark.skipif(not (shutil.which("chromium") or os.path.exists("/usr/bin/chromium")),
                                reason="Debian chromium not installed (make system-deps)")


def test_viewer_login_worklist_study_outline_review(live_service, tmp_path):
    from tests.serving.cdp import Browser

    base, tokens, job_id, _data = live_service
    top = httpx.get(base + "/worklist", headers=auth(tokens["reader"])).json()["items"][0]["id"]
    b = Browser()
    try:
        b.goto(base + "/")
        b.wait("!document.getElementById('login').hidden", what="the login form")
        b.eval(f"document.getElementById('token').value = {json.dumps(tokens['reader'])}")
        b.click("#login-btn")
        b.wait("document.querySelectorAll('#worklist tbody tr').length > 0", what="worklist rows")
        assert b.eval("document.getElementById('who').textContent").startswith("live-reader")
        assert b.eval("document.querySelector('#worklist tbody tr').dataset.id") == top
        b.click("#worklist tbody tr")
        b.wait("location.pathname.endsWith('study.html') && document.readyState === 'complete'", what="study page")
        b.wait("document.getElementById('slice').src.startsWith('blob:') && "
               "document.getElementById('slice').complete && document.getElementById('slice').naturalWidth > 0",
               timeout_s=60, what="the slice image")
        assert b.eval("document.getElementById('verdict').textContent") in ("discordant", "concordant", "indeterminate")
        visible = "getComputedStyle(document.getElementById('outline')).visibility"
        assert b.eval(visible) == "visible"
        b.click("#toggle-outline")
        assert b.eval(visible) == "hidden"
        b.click("#toggle-outline")
        assert b.eval(visible) == "visible"
        # jump to the first AI finding when there is one; scroll one slice otherwise
        if b.eval("document.querySelectorAll('button.jump:not([disabled])').length"):
            b.click("button.jump:not([disabled])")
        b.eval("document.getElementById('review-text').value = 'Outline matches the lesion.'")
        b.click("#review-agree")
        b.wait("[...document.querySelectorAll('#reviews li')].some(li => li.textContent.includes('agree'))",
               what="the review to be listed")
        b.wait("document.getElementById('outline').complete", what="outline image")
        b.screenshot(tmp_path / "study.png")
        assert not b.console, b.console
    finally:
        b.close()
    reviews = httpx.get(f"{base}/studies/{top}/reviews", headers=auth(tokens["reader"])).json()["reviews"]
    assert reviews[-1]["action"] == "agree" and reviews[-1]["reviewer"] == "live-reader"
    assert reviews[-1]["comment"] == "Outline matches the lesion."
    shot = tmp_path / "study.png"
    assert shot.stat().st_size > 20_000
    if os.environ.get("PREREAD_UPDATE_SCREENSHOT"):
        (REPO_ROOT / "docs").mkdir(exist_ok=True)
        shutil.copy(shot, REPO_ROOT / "docs" / "viewer_study.png")
