"""Preprocessing geometry: boxes in mm, HU window, and a resampled box mapping back onto the same voxels."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from pipelines.errors import PreprocessError
from pipelines.preprocess import grid_size, grow_box, mask_box, prepare_crop, resample, window_hu


def test_window_maps_hu_to_unit_range():
    t = window_hu(np.array([-2000, -1000, -300, 400, 3000], np.int16), (-1000, 400))
    assert torch.allclose(t, torch.tensor([0.0, 0.0, 0.5, 1.0, 1.0]))
    with pytest.raises(PreprocessError, match="empty"):
        window_hu(np.zeros(3), (400, -1000))


def test_grid_size_follows_mm_not_voxels():
    # 100 slices of 2.5 mm, 200 rows/cols of 0.7 mm → 250 x 140 x 140 mm at 1.25 mm iso = 200 x 112 x 112
    assert grid_size((100, 200, 200), (0.7, 0.7, 2.5), 1.25) == (200, 112, 112)
    assert grid_size((100, 200, 200), (0.7, 0.7, 2.5), 1.25, divisor=16) == (208, 112, 112)


def test_box_growth_is_in_mm_per_axis():
    m = np.zeros((50, 60, 60), bool)
    m[20:30, 25:35, 25:35] = True
    box = mask_box(m, 5.0, (0.5, 0.5, 2.5))  # 5 mm = 2 slices, 10 columns/rows
    assert box == ((18, 32), (15, 45), (15, 45))
    assert grow_box(box, 100.0, (0.5, 0.5, 2.5), m.shape) == ((0, 50), (0, 60), (0, 60))


def test_resampled_box_maps_back_onto_the_same_voxels():
    hu = np.full((40, 64, 64), -1000, np.int16)
    hu[18:24, 30:42, 10:22] = 100
    box = ((10, 34), (20, 52), (4, 36))
    crop = prepare_crop(hu, (0.7, 0.7, 2.0), box, (-1000, 400), 1.4)
    back = resample(crop.image, (24, 32, 32))[0, 0].numpy() > 0.5 * 1100 / 1400  # half the block's value
    want = hu[10:34, 20:52, 4:36] > 0
    assert (back & want).sum() / want.sum() > 0.9
    assert np.allclose(np.argwhere(back).mean(0), np.argwhere(want).mean(0), atol=0.5)
