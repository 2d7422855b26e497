import json
import subprocess
import sys

from serving.cli import main


def test_version_json(tmp_path):
    out = tmp_path / "v.json"
    assert main(["version", "--json", str(out)]) == 0
    data = json.loads(out.read_text())
    assert data["preread"] and data["torch"].startswith("2.")


def test_unknown_subcommand_exits_2_without_traceback():
    proc = subprocess.run([sys.executable, "-c", "from serving.cli import run; run()", "nope"],
                          capture_output=True, text=True)
    assert proc.returncode == 2
    assert "Traceback" not in proc.stderr
