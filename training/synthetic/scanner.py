"""Scanner effects: smooth random texture fields, reconstruction-kernel blur and sharpening, dose noise.

Noise is Gaussian with the noise power spectrum of filtered back-projection, NPS(f) ∝ f·exp(-f²/(2 f_p²)),
peaking at the kernel's ``nps_peak_cpmm``; its standard deviation scales as 1/sqrt(CTDIvol) and
1/sqrt(slice thickness) from the kernel's reference (10 mGy, 1.25 mm).
"""

from __future__ import annotations

import numpy as np
from scipy import fft as sfft
from scipy import ndimage

from training.synthetic.config import Kernel


def _interp_index(n_out: int, n_in: int, pos: np.ndarray):
    """Indices and weights to sample a coarse axis of length ``n_in`` at fractional positions ``pos``."""
    pos = np.clip(pos, 0, n_in - 1.000001)
    i0 = np.floor(pos).astype(np.intp)
    return i0, (pos - i0).astype(np.float32)


class SmoothField:
    """A zero-mean, unit-variance Gaussian random field with correlation length ~``cell_mm``, per slice."""

    def __init__(self, rng: np.random.Generator, shape_kji: tuple[int, int, int], spacing: np.ndarray,
                 cell_mm: float):
        nk, nj, ni = shape_kji
        sx, sy, sz = spacing
        self.cell = cell_mm
        self.sz = sz
        nci = int(np.ceil(ni * sx / cell_mm)) + 3
        ncj = int(np.ceil(nj * sy / cell_mm)) + 3
        nck = int(np.ceil(nk * sz / cell_mm)) + 3
        c = ndimage.gaussian_filter(rng.normal(size=(nck, ncj, nci)).astype(np.float32), 1.0, mode="wrap")
        self.c = c / (c.std() + 1e-6)
        self.ix, self.fx = _interp_index(ni, nci, np.arange(ni) * sx / cell_mm + 1.0)
        self.iy, self.fy = _interp_index(nj, ncj, np.arange(nj) * sy / cell_mm + 1.0)

    def slice(self, k_frac: float, box: tuple[slice, slice] | None = None) -> np.ndarray:
        """The field on output slice ``k_frac`` (fractional index), over ``box`` (rows, cols) if given."""
        zc = np.clip(k_frac * self.sz / self.cell + 1.0, 0, self.c.shape[0] - 1.000001)
        k0 = int(zc)
        f = np.float32(zc - k0)
        plane = (1.0 - f) * self.c[k0] + f * self.c[k0 + 1]
        by, bx = box if box is not None else (slice(None), slice(None))
        iy, fy, ix, fx = self.iy[by], self.fy[by], self.ix[bx], self.fx[bx]
        rows = plane[iy] * (1.0 - fy)[:, None] + plane[iy + 1] * fy[:, None]
        return rows[:, ix] * (1.0 - fx)[None, :] + rows[:, ix + 1] * fx[None, :]


def noise_sigma(kernel: Kernel, ctdi_mgy: float, thickness_mm: float, body_half_width_mm: float) -> float:
    """Noise standard deviation (HU) for a dose, slice thickness and patient size."""
    size = np.exp(0.012 * (body_half_width_mm - 155.0))  # larger patients attenuate more
    return float(kernel.noise_hu * np.sqrt(10.0 / ctdi_mgy) * np.sqrt(1.25 / thickness_mm) * size)


class NoiseBank:
    """A few noise fields with the kernel's NPS; each slice takes one, circularly shifted and signed."""

    def __init__(self, rng: np.random.Generator, shape_ji: tuple[int, int], px_mm: float, kernel: Kernel,
                 n: int = 6):
        nj, ni = shape_ji
        fy = sfft.fftfreq(nj, d=px_mm)[:, None]
        fx = sfft.rfftfreq(ni, d=px_mm)[None, :]
        f = np.sqrt(fx * fx + fy * fy)
        amp = np.sqrt(f) * np.exp(-(f * f) / (4.0 * kernel.nps_peak_cpmm ** 2))
        white = rng.normal(size=(n, nj, ni)).astype(np.float32)
        field = sfft.irfft2(sfft.rfft2(white, axes=(1, 2)) * amp[None], s=(nj, ni), axes=(1, 2))
        field /= field.std(axis=(1, 2), keepdims=True) + 1e-9
        self.bank = field.astype(np.float32)
        self.rng = rng

    def draw(self) -> np.ndarray:
        b = self.bank[int(self.rng.integers(len(self.bank)))]
        dy, dx = (int(v) for v in self.rng.integers(0, b.shape, 2))
        out = np.roll(b, (dy, dx), axis=(0, 1))
        if self.rng.random() < 0.5:
            out = out[::-1, ::-1]
        return out


def apply_kernel(vol: np.ndarray, px_mm: float, kernel: Kernel, chunk: int = 32) -> None:
    """In-place reconstruction blur (Gaussian PSF) and edge enhancement (unsharp mask) of each axial slice."""
    s1 = kernel.psf_sigma_mm / px_mm
    s2 = 1.6 / px_mm
    for k0 in range(0, vol.shape[0], chunk):
        v = vol[k0:k0 + chunk]
        b = ndimage.gaussian_filter(v, (0, s1, s1), mode="nearest", truncate=3.0)
        if kernel.sharpen > 0:
            b2 = ndimage.gaussian_filter(b, (0, s2, s2), mode="nearest", truncate=2.5)
            b += kernel.sharpen * (b - b2)
        vol[k0:k0 + chunk] = b
