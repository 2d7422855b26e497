"""Analytic chest anatomy: body wall, ribs, spine, sternum, mediastinum, heart, aorta, lungs, lobes.

Every structure is a (signed) distance function of patient coordinates in mm (LPS: x to the patient's
left, y posterior, z superior), so the same code renders an axial slice and answers point queries
(nodule placement, vessel growth). Partial volume at smooth boundaries comes from a one-pixel linear ramp
on the signed distance; ribs are integrated over the slice thickness analytically.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

LOBES = {1: "RUL", 2: "RML", 3: "RLL", 4: "LUL", 5: "LLL"}


def _ramp(d: np.ndarray, w: float) -> np.ndarray:
    """Occupancy of a voxel of width ``w`` whose centre is at signed distance ``d`` (mm, >0 inside)."""
    return np.clip(d / w + 0.5, 0.0, 1.0)


def _lerp(a, b, t):
    return a + (b - a) * t


@dataclass
class Anatomy:
    """One patient's anatomy, drawn from a random generator. Coordinates: LPS mm."""

    bx: float  # body centre (LPS x, y)
    by: float
    z0: float  # LPS z of the lowest lung base (posterior costophrenic recess)
    H: float  # lung height, base to apex (mm)
    a0: float  # body half-width (mm)
    b0: float  # body half-depth (mm)
    fat: float  # subcutaneous fat thickness (mm)
    m_post: float
    m_lat: float
    m_ant: float
    p_body: float
    rib_pitch: float
    rib_z1: float  # local z of rib 1 posteriorly
    rib_drop: float  # how far a rib descends from back to front (mm)
    rib_ar: float
    rib_bz: float
    r_vb: float
    xm: float  # mediastinal midline (local x)
    w_med: float
    heart_c: tuple[float, float, float]
    heart_ax: tuple[float, float, float]
    heart_rot: float
    peri_fat: float
    zd_r: float  # dome heights (local z)
    zd_l: float
    z_arch: float
    z_carina: float
    emphysema: float  # 0 none, else severity (fraction of upper-lung voxels)
    fissure_slope_r: float
    fissure_slope_l: float
    fissure_zr: float  # local z of the right oblique fissure at y = 0
    fissure_zl: float
    fissure_h: float  # local z of the horizontal fissure
    fissure_phase: tuple[float, float, float]
    lung_hu: float
    coronary: tuple  # ((x, y, z, r), ...) local coordinates of coronary calcifications

    # ---- drawing -----------------------------------------------------------------------------------------
    @classmethod
    def draw(cls, rng: np.random.Generator, bx: float, by: float, z0: float, *, lung_hu: float,
             emphysema_probability: float, max_half_width: float) -> "Anatomy":
        H = rng.uniform(225.0, 270.0)
        a0 = min(rng.uniform(138.0, 172.0), max_half_width)
        s = a0 / 155.0
        b0 = a0 * rng.uniform(0.66, 0.78)
        fat = rng.uniform(3.0, 14.0) * s
        rib_pitch = (H + 30.0) / 10.5
        zd_r = H * rng.uniform(0.2, 0.27)
        return cls(
            bx=bx, by=by, z0=z0, H=H, a0=a0, b0=b0, fat=fat,
            m_post=rng.uniform(10.0, 18.0) * s, m_lat=rng.uniform(2.0, 5.0) * s, m_ant=rng.uniform(4.0, 12.0) * s,
            p_body=rng.uniform(2.2, 2.7),
            rib_pitch=rib_pitch, rib_z1=H + rng.uniform(2.0, 10.0), rib_drop=rng.uniform(100.0, 130.0) * s,
            rib_ar=rng.uniform(2.6, 3.4) * s, rib_bz=rng.uniform(5.0, 6.5) * s,
            r_vb=rng.uniform(14.0, 18.0) * s,
            xm=rng.uniform(2.0, 10.0), w_med=rng.uniform(13.0, 17.0) * s,
            heart_c=(rng.uniform(18.0, 30.0) * s, -b0 * rng.uniform(0.25, 0.33), zd_r + rng.uniform(30.0, 42.0)),
            heart_ax=(rng.uniform(54.0, 64.0) * s, rng.uniform(40.0, 47.0) * s, rng.uniform(45.0, 55.0) * s),
            heart_rot=np.deg2rad(rng.uniform(25.0, 45.0)),
            peri_fat=rng.uniform(2.5, 8.0),
            zd_r=zd_r, zd_l=zd_r - rng.uniform(8.0, 22.0),
            z_arch=H * rng.uniform(0.66, 0.72), z_carina=H * rng.uniform(0.58, 0.63),
            emphysema=(rng.uniform(0.05, 0.3) if rng.random() < emphysema_probability else 0.0),
            fissure_slope_r=rng.uniform(0.8, 1.2), fissure_slope_l=rng.uniform(0.85, 1.3),
            fissure_zr=H * rng.uniform(0.38, 0.46), fissure_zl=H * rng.uniform(0.4, 0.5),
            fissure_h=H * rng.uniform(0.5, 0.58),
            fissure_phase=tuple(rng.uniform(0, 2 * np.pi, 3)),
            lung_hu=lung_hu,
            coronary=tuple(
                (float(rng.uniform(-30, 40) * s), float(-b0 * 0.35 + rng.uniform(-10, 10)),
                 float(zd_r + rng.uniform(45, 80)), float(rng.uniform(1.0, 2.5)))
                for _ in range(int(rng.integers(0, 5)))
            ),
        )

    # ---- helpers in local coordinates -------------------------------------------------------------------
    def local(self, x, y, z):
        return x - self.bx, y - self.by, z - self.z0

    def body_axes(self, zl):
        t = zl / self.H
        shrink = 1.0 - 0.14 * np.clip((t - 0.78) / 0.35, 0.0, 1.0) ** 2
        a = self.a0 * shrink
        b = self.b0 * (1.0 - 0.06 * np.clip((t - 0.8) / 0.3, 0.0, 1.0))
        return a, b

    def body_depth(self, xl, yl, zl):
        """Approximate depth below the skin (mm), negative outside the body."""
        a, b = self.body_axes(zl)
        bb = np.where(yl > 0, b * 0.92, b)
        p = self.p_body
        r = np.sqrt(xl * xl + yl * yl) + 1e-3
        rho = (np.abs(xl / a) ** p + np.abs(yl / bb) ** p) ** (1.0 / p) + 1e-6
        return r * (1.0 / rho - 1.0), r

    def layers(self, xl, yl, zl, r):
        """Depths (mm below skin) where fat ends, muscle ends and the thoracic cavity begins."""
        cy = yl / r
        c2 = (xl * xl - yl * yl) / (r * r)
        t = zl / self.H
        fat = self.fat * (1.0 + 0.3 * c2) * (0.85 + 0.3 * np.clip(-cy, 0, 1))
        pect = np.clip((t - 0.45) / 0.2, 0.0, 1.0) * np.clip(1.0 - np.abs(xl) / (self.a0 * 0.9), 0, 1)
        musc = (self.m_lat + (self.m_post - self.m_lat) * np.clip(cy, 0, 1) ** 4
                + (self.m_ant - self.m_lat) * np.clip(-cy, 0, 1) ** 2 * (0.4 + 0.6 * pect))
        d_fat = 1.8 + fat
        d_musc = d_fat + musc
        d_cav = d_musc + 2.0 * self.rib_ar + 0.5
        return d_fat, d_musc, d_cav

    def spine_y(self):
        """Local y of the vertebral body centre."""
        s = self.a0 / 155.0
        return self.b0 * 0.92 - self.fat - self.r_vb - 52.0 * s

    def dome_z(self, xl, yl):
        """Local z of the diaphragm surface below (x, y)."""
        right = xl < self.xm
        zd = np.where(right, self.zd_r, self.zd_l)
        xc = np.where(right, -0.42 * self.a0, 0.42 * self.a0)
        q = ((xl - xc) / (0.62 * self.a0)) ** 2 + ((yl + 0.1 * self.b0) / (0.85 * self.b0)) ** 2
        return np.maximum(zd * (1.0 - q / 1.9), -12.0)

    def heart_sd(self, xl, yl, zl, inflate=0.0):
        hx, hy, hz = self.heart_c
        ca, sa = np.cos(self.heart_rot), np.sin(self.heart_rot)
        u = (xl - hx) * ca - (yl - hy) * sa
        v = (xl - hx) * sa + (yl - hy) * ca
        w = zl - hz
        ax, ay, az = (a + inflate for a in self.heart_ax)
        rho = np.sqrt((u / ax) ** 2 + (v / ay) ** 2 + (w / az) ** 2)
        return (1.0 - rho) * min(ax, ay, az)

    def aorta_parts(self):
        s = self.a0 / 155.0
        yv = self.spine_y()
        asc = (-8.0 * s + self.xm, -0.2 * self.b0, 14.5 * s)
        desc = (self.xm + self.r_vb + 6.0 * s, yv - self.r_vb * 0.55, 11.5 * s)
        return asc, desc

    def aorta_sd(self, xl, yl, zl, inflate=0.0):
        (ax_, ay_, ar), (dx_, dy_, dr) = self.aorta_parts()
        za = self.z_arch
        ha = self.heart_c[2] + self.heart_ax[2] * 0.55
        sd_asc = (ar + inflate) - np.sqrt((xl - ax_) ** 2 + (yl - ay_) ** 2)
        sd_asc = np.minimum(sd_asc, np.minimum(za - zl, zl - ha))
        sd_desc = (dr + inflate) - np.sqrt((xl - dx_) ** 2 + (yl - dy_) ** 2)
        sd_desc = np.minimum(sd_desc, za - zl)
        # arch: half circle (left half) joining the two, in the plane z = z_arch
        cx, cy = (ax_ + dx_) / 2, (ay_ + dy_) / 2
        R = 0.5 * np.hypot(dx_ - ax_, dy_ - ay_)
        ux, uy = (dx_ - ax_) / (2 * R), (dy_ - ay_) / (2 * R)  # unit chord direction
        nx, ny = uy, -ux  # normal pointing to patient's left/anterior side
        if nx < 0:
            nx, ny = -nx, -ny
        px, py = xl - cx, yl - cy
        side = px * nx + py * ny
        rr = np.sqrt(px * px + py * py) + 1e-6
        rarch = (ar + dr) / 2 + inflate
        d_ring = np.sqrt((rr - R) ** 2 + (zl - za) ** 2)
        d_ring = np.where(side >= 0, d_ring, 1e3)
        sd_arch = rarch - d_ring
        return np.maximum(np.maximum(sd_asc, sd_desc), sd_arch)

    def mediastinum_sd(self, xl, yl, zl):
        """Signed distance to the mediastinal envelope: a lens from the sternum to the spine."""
        yv = self.spine_y()
        y_ant = -(self.b0 - self.fat - self.m_ant - 6.0)
        yc = 0.5 * (y_ant + yv)
        hb = 0.5 * (yv - y_ant) + 6.0
        rho = np.sqrt(((xl - self.xm) / self.w_med) ** 2 + ((yl - yc) / hb) ** 2)
        return (1.0 - rho) * self.w_med

    def great_vessels(self):
        """(dx, dy, r) of the brachiocephalic trunk, left carotid, left subclavian and both brachiocephalic
        veins above the arch, relative to (xm, 0)."""
        s = self.a0 / 155.0
        return ((-14 * s, -22 * s, 5.5 * s), (2 * s, -20 * s, 4.5 * s), (16 * s, -12 * s, 4.5 * s),
                (-28 * s, -8 * s, 7.0 * s), (10 * s, -32 * s, 5.5 * s))

    def mediastinal_vessels_sd(self, xl, yl, zl, inflate=0.0):
        """Great vessels above the arch and the superior vena cava below it."""
        s = self.a0 / 155.0
        above = zl > self.z_arch
        sd = np.full(np.broadcast(xl, yl, zl).shape, -1e3, np.float32)
        for dx, dy, rv in self.great_vessels():
            sd = np.maximum(sd, np.where(above, rv + inflate - np.hypot(xl - self.xm - dx, yl - dy), -1e3))
        svc_z = (zl <= self.z_arch) & (zl > self.heart_c[2] + 0.4 * self.heart_ax[2])
        sd = np.maximum(sd, np.where(svc_z, 9.0 * s + inflate - np.hypot(xl - self.xm + 30 * s, yl + 0.15 * self.b0), -1e3))
        return sd

    def spine_sd(self, xl, yl, zl, inflate=0.0):
        yv = self.spine_y()
        sd_body = (self.r_vb + inflate) - np.sqrt(xl * xl + (yl - yv) ** 2)
        return np.maximum(sd_body, self.paraspinal_sd(xl, yl, inflate))

    def paraspinal_sd(self, xl, yl, inflate=0.0):
        """The paraspinal muscles and posterior vertebral elements: a rounded block behind the vertebral body."""
        yv = self.spine_y()
        ax_ = self.r_vb + 18.0 + inflate
        ay_ = self.r_vb + 40.0 + inflate
        rho = np.sqrt((xl / ax_) ** 2 + ((yl - (yv + 1.1 * self.r_vb + 32.0)) / ay_) ** 2)
        return (1.0 - rho) * ax_

    def apex_sd(self, xl, yl, zl, right):
        z_ap0 = 0.7 * self.H
        u = np.clip((zl - z_ap0) / (self.H - z_ap0), 0.0, 1.0)
        f = np.sqrt(np.clip(1.0 - u * u, 0.0, 1.0)) + 1e-3
        cx = np.where(right, -0.45 * self.a0, 0.45 * self.a0) + self.xm * 0.5
        rx = 0.58 * self.a0 * f
        ry = 0.95 * self.b0 * f
        rho = np.sqrt(((xl - cx) / rx) ** 2 + ((yl - 0.1 * self.b0) / ry) ** 2)
        return (1.0 - rho) * np.minimum(rx, ry)

    def lung_sd(self, xl, yl, zl, depth=None, r=None):
        """Signed distance to the lung surface (mm, >0 inside a lung), and the right-side flag."""
        if depth is None:
            depth, r = self.body_depth(xl, yl, zl)
        _, _, d_cav = self.layers(xl, yl, zl, r)
        right = xl < self.xm
        sd = depth - d_cav
        sd = np.minimum(sd, zl - self.dome_z(xl, yl))
        sd = np.minimum(sd, -self.mediastinum_sd(xl, yl, zl))
        sd = np.minimum(sd, -self.heart_sd(xl, yl, zl, inflate=self.peri_fat))
        sd = np.minimum(sd, -self.aorta_sd(xl, yl, zl, inflate=2.0))
        sd = np.minimum(sd, -self.spine_sd(xl, yl, zl, inflate=3.0))
        sd = np.minimum(sd, -self.mediastinal_vessels_sd(xl, yl, zl, inflate=3.0))
        sd = np.minimum(sd, self.apex_sd(xl, yl, zl, right))
        return sd, right

    # ---- points (LPS) -----------------------------------------------------------------------------------
    def lung_side_at(self, pts: np.ndarray, margin: float = 0.0) -> np.ndarray:
        """For (N, 3) LPS points: 1 right lung, 2 left lung, 0 elsewhere (inside by at least ``margin`` mm)."""
        xl, yl, zl = self.local(pts[:, 0], pts[:, 1], pts[:, 2])
        sd, right = self.lung_sd(xl, yl, zl)
        return np.where(sd > margin, np.where(right, 1, 2), 0).astype(np.uint8)

    def lung_sd_at(self, pts: np.ndarray) -> np.ndarray:
        xl, yl, zl = self.local(pts[:, 0], pts[:, 1], pts[:, 2])
        return self.lung_sd(xl, yl, zl)[0]

    def lobe_at(self, pts: np.ndarray) -> np.ndarray:
        xl, yl, zl = self.local(pts[:, 0], pts[:, 1], pts[:, 2])
        right = xl < self.xm
        return self._lobe(xl, yl, zl, right)

    def _fissures(self, xl, yl, zl, right):
        p0, p1, p2 = self.fissure_phase
        slope = np.where(right, self.fissure_slope_r, self.fissure_slope_l)
        zf = np.where(right, self.fissure_zr, self.fissure_zl) + slope * yl + 5.0 * np.sin(xl / 31.0 + p0) \
            + 3.0 * np.sin(yl / 23.0 + p1)
        zh = self.fissure_h + 4.0 * np.sin(xl / 27.0 + p2) - 0.08 * yl
        return zf, zh, slope

    def _lobe(self, xl, yl, zl, right):
        zf, zh, _ = self._fissures(xl, yl, zl, right)
        lower = zl < zf
        r_lobe = np.where(lower, 3, np.where(zl < zh, 2, 1))
        l_lobe = np.where(lower, 5, 4)
        return np.where(right, r_lobe, l_lobe).astype(np.uint8)

    # ---- axial slice rendering --------------------------------------------------------------------------
    def prepare(self, X: np.ndarray, Y: np.ndarray, px: float, hu: dict) -> dict:
        """Precompute the parts of a slice that do not depend on z (the anatomy is mostly a prism).

        Everything but the air and the table is computed inside the body's bounding box only.
        """
        f32 = np.float32
        xf = (X - self.bx).astype(f32)
        yf = (Y - self.by).astype(f32)
        rf = np.sqrt(xf * xf + yf * yf) + f32(1e-3)
        d0 = self._depth_ab(xf, yf, rf, *self.body_axes(0.0))
        y_tab = self.b0 + 12.0 + 0.0006 * xf * xf
        tab = _ramp(2.0 - np.abs(yf - y_tab), px) * (np.abs(xf) < self.a0 * 1.15)
        background = _lerp(np.full(X.shape, hu["air"], f32), f32(hu["table"]), tab).astype(f32)
        inside = d0 > -3.0 * px
        jj = np.nonzero(inside.any(1))[0]
        ii = np.nonzero(inside.any(0))[0]
        box = (slice(int(jj[0]), int(jj[-1]) + 1), slice(int(ii[0]), int(ii[-1]) + 1))
        xl, yl, r = xf[box], yf[box], rf[box]
        c: dict = {"xl": xl, "yl": yl, "box": box, "background": background, "vert": {}}
        c["r"] = r
        cy = yl / r
        c["cy"] = cy
        c2 = (xl * xl - yl * yl) / (r * r)
        fat = self.fat * (1.0 + 0.3 * c2) * (0.85 + 0.3 * np.clip(-cy, 0, 1))
        c["d_fat"] = (1.8 + fat).astype(f32)
        pect_x = np.clip(1.0 - np.abs(xl) / (self.a0 * 0.9), 0, 1)
        base = self.m_lat + (self.m_post - self.m_lat) * np.clip(cy, 0, 1) ** 4
        ant = (self.m_ant - self.m_lat) * np.clip(-cy, 0, 1) ** 2
        c["musc_a"] = (base + ant * 0.4).astype(f32)
        c["musc_b"] = (ant * 0.6 * pect_x).astype(f32)
        c["wall"] = f32(2.0 * self.rib_ar + 0.5)
        c["depth0"] = self._depth_ab(xl, yl, r, *self.body_axes(0.0))
        c["rbound"] = c["depth0"] + r  # distance from the body centre to the skin along each ray
        gv = np.full(xl.shape, -1e3, f32)
        for dx, dy, rv in self.great_vessels():
            gv = np.maximum(gv, rv - np.hypot(xl - self.xm - dx, yl - dy))
        c["gv_sd"] = gv.astype(f32)
        c["svc_sd"] = (9.0 * (self.a0 / 155.0) - np.hypot(xl - self.xm + 30 * (self.a0 / 155.0), yl + 0.15 * self.b0)).astype(f32)
        c["dome"] = self.dome_z(xl, yl).astype(f32)
        c["right"] = xl < self.xm
        # heart (in-plane part of the ellipsoid)
        hx, hy, hz = self.heart_c
        ca, sa = np.cos(self.heart_rot), np.sin(self.heart_rot)
        u = (xl - hx) * ca - (yl - hy) * sa
        v = (xl - hx) * sa + (yl - hy) * ca
        ax, ay, az = self.heart_ax
        c["heart_q"] = ((u / ax) ** 2 + (v / ay) ** 2).astype(f32)
        pf = self.peri_fat
        c["heart_qi"] = ((u / (ax + pf)) ** 2 + (v / (ay + pf)) ** 2).astype(f32)
        # aorta
        (ax_, ay_, ar), (dx_, dy_, dr) = self.aorta_parts()
        c["d_asc"] = np.sqrt((xl - ax_) ** 2 + (yl - ay_) ** 2).astype(f32)
        c["d_desc"] = np.sqrt((xl - dx_) ** 2 + (yl - dy_) ** 2).astype(f32)
        cx, cyy = (ax_ + dx_) / 2, (ay_ + dy_) / 2
        R = 0.5 * np.hypot(dx_ - ax_, dy_ - ay_)
        ux, uy = (dx_ - ax_) / (2 * R), (dy_ - ay_) / (2 * R)
        nx, ny = uy, -ux
        if nx < 0:
            nx, ny = -nx, -ny
        side = (xl - cx) * nx + (yl - cyy) * ny
        ring = (np.sqrt((xl - cx) ** 2 + (yl - cyy) ** 2) - R) ** 2
        c["arch_ring"] = np.where(side >= 0, ring, 1e6).astype(f32)
        c["aorta_r"] = (ar, dr)
        c["static_sd"] = np.minimum(-self.mediastinum_sd(xl, yl, 0.0), -self.spine_sd(xl, yl, 0.0, inflate=3.0)).astype(f32)
        c["apex0"] = self.apex_sd(xl, yl, 0.0, c["right"]).astype(f32)
        # fissure surfaces
        p0, p1, p2 = self.fissure_phase
        slope = np.where(c["right"], self.fissure_slope_r, self.fissure_slope_l)
        c["fis_slope"] = slope.astype(f32)
        c["fis_z"] = (np.where(c["right"], self.fissure_zr, self.fissure_zl) + slope * yl
                      + 5.0 * np.sin(xl / 31.0 + p0) + 3.0 * np.sin(yl / 23.0 + p1)).astype(f32)
        c["fis_h"] = (self.fissure_h + 4.0 * np.sin(xl / 27.0 + p2) - 0.08 * yl).astype(f32)
        c["grav"] = (hu_grav_profile(yl, self.b0)).astype(f32)
        c["liver"] = (((xl + 0.25 * self.a0) / (0.85 * self.a0)) ** 2 + (yl / (0.95 * self.b0)) ** 2 < 1.0) \
            & (xl < self.xm + 0.2 * self.a0)
        c["paraspinal"] = _ramp(self.paraspinal_sd(xl, yl), 1.0).astype(f32)
        # spine
        s = self.a0 / 155.0
        yv = self.spine_y()
        dvb = np.hypot(xl, yl - yv)
        c["dvb"] = dvb.astype(f32)
        yc = yv + self.r_vb + 8.5 * s
        dc = np.hypot(xl, yl - yc)
        c["dc"] = dc.astype(f32)
        c["yc"] = yc
        c["eso_d"] = np.hypot(xl - self.xm - 8.0 * s, yl - (yv - self.r_vb - 7.0)).astype(f32)
        c["svc_d"] = np.hypot(xl - self.xm + 30 * s, yl + 0.15 * self.b0).astype(f32)
        c["drop"] = (self.rib_drop * np.clip((1.0 - cy) / 2.0, 0.0, 1.0) ** 1.1).astype(f32)
        d_cav0 = c["d_fat"] + c["musc_a"] + c["wall"]
        dr0 = c["depth0"] - d_cav0 + (self.rib_ar + 1.0)
        margin = self.rib_ar + 2.0 * px + float(c["musc_b"].max()) + 1.0
        ring = np.nonzero((np.abs(dr0) < margin).ravel())[0]
        c["ring"] = ring
        c["ring_x"], c["ring_y"], c["ring_drop"] = xl.ravel()[ring], yl.ravel()[ring], c["drop"].ravel()[ring]
        return c

    def _depth_ab(self, xl, yl, r, a, b):
        """Depth below the skin (mm) for body semi-axes ``a`` (left-right) and ``b`` (anterior)."""
        bb = np.where(yl > 0, np.float32(b * 0.92), np.float32(b))
        p = self.p_body
        rho = (np.abs(xl / a) ** p + np.abs(yl / bb) ** p) ** (1.0 / p) + 1e-6
        return (r * (1.0 / rho - 1.0)).astype(np.float32)

    def _vertebra(self, c: dict, px: float, hu: dict, disc: bool, tproc: bool, spin: bool):
        """Bone occupancy and HU of a vertebra for one phase (disc level, transverse / spinous processes),
        the disc occupancy (or None) and the spinal canal occupancy, over the body box."""
        f32 = np.float32
        s = self.a0 / 155.0
        xl, yl = c["xl"], c["yl"]
        bone = np.zeros(xl.shape, f32)
        bone_hu = np.zeros(xl.shape, f32)

        def add_bone(occ, val):
            nonlocal bone, bone_hu
            bone_hu = np.where(occ > bone, val, bone_hu)
            bone = np.maximum(bone, occ)

        dvb = c["dvb"]
        vb_occ = _ramp(self.r_vb - dvb, px)
        disc_occ = None
        if disc:
            disc_occ = vb_occ.astype(f32)
        else:
            cortex = _ramp(dvb - (self.r_vb - 1.6), px)
            add_bone(vb_occ, _lerp(f32(hu["bone_cancellous"]), f32(hu["bone_cortical"] * 0.75), cortex))
        dc, yc = c["dc"], c["yc"]
        canal = _ramp(7.0 * s - dc, px).astype(f32)
        add_bone(_ramp(np.minimum(12.5 * s - dc, dc - 7.0 * s), px) * (yl > yc - 4.0 * s), f32(hu["bone_cortical"] * 0.7))
        if tproc:
            # transverse processes: bars pointing posterolaterally from the arch
            u = (np.abs(xl) * 0.8 + (yl - yc) * 0.6)
            v = (-np.abs(xl) * 0.6 + (yl - yc) * 0.8)
            add_bone(_ramp(np.minimum(3.2 * s - np.abs(v), np.minimum(u - 8 * s, 27 * s - u)), px),
                     f32(hu["bone_cortical"] * 0.6))
        if spin:
            add_bone(_ramp(np.minimum(3.5 * s - np.abs(xl), np.minimum(yl - yc, yc + 30 * s - yl)), px),
                     f32(hu["bone_cortical"] * 0.65))
        return bone.astype(f32), bone_hu.astype(f32), disc_occ, canal

    def render_slice(self, c: dict, z: float, px: float, thickness: float, hu: dict,
                     lung_field: np.ndarray | None, emph_field: np.ndarray | None, fissures: bool):
        """One axial slice at LPS height ``z`` from the z-independent cache ``c`` (see :meth:`prepare`).

        ``lung_field`` / ``emph_field`` cover the body box ``c["box"]``. Returns ``(hu, lung_label,
        lobe_label, soft)`` over the body box; ``soft`` is the fraction of each pixel in which vessels may be
        composited (thoracic cavity less bone and abdomen). :meth:`paste` puts them into full slices.
        """
        f32 = np.float32
        xl, yl, r = c["xl"], c["yl"], c["r"]
        zl = float(z - self.z0)
        t = zl / self.H
        if t > 0.76:
            a_, b_ = self.body_axes(zl)
            depth = c["rbound"] * f32(np.sqrt(a_ * b_ / (self.a0 * self.b0))) - r
        else:
            depth = c["depth0"]
        d_fat = c["d_fat"]
        pect_t = float(np.clip((t - 0.45) / 0.2, 0.0, 1.0))
        d_musc = d_fat + c["musc_a"] + c["musc_b"] * f32(pect_t)
        d_cav = d_musc + c["wall"]
        body = _ramp(depth, px)
        img = c["background"][c["box"]]
        tissue = _lerp(f32(hu["skin"]), f32(hu["fat"]), _ramp(depth - 1.8, px))
        tissue = _lerp(tissue, f32(hu["muscle"]), _ramp(depth - d_fat, px))
        cav = _ramp(depth - d_cav, px)

        # ---- cavity contents
        below = _ramp(c["dome"] - zl, px)
        cont = _lerp(f32(hu["fat"]), np.where(c["liver"], f32(hu["liver"]), f32(hu["abdomen"])), below)
        if zl < self.zd_l + 5:
            gx, gy, gz = 0.45 * self.a0, -0.15 * self.b0, self.zd_l - 30.0
            gsd = 1.0 - np.sqrt(((xl - gx) / 35.0) ** 2 + ((yl - gy) / 28.0) ** 2 + ((zl - gz) / 18.0) ** 2)
            gas = _ramp(gsd * 18.0, px) * _ramp((zl - gz) + 2.0, px)
            cont = _lerp(cont, f32(hu["air"]), gas * below)
        hx, hy, hz = self.heart_c
        ax, ay, az = self.heart_ax
        wz = (zl - hz) / az
        heart_sd = None
        if abs(wz) < 1.3:
            heart_sd = (1.0 - np.sqrt(c["heart_q"] + wz * wz)) * min(ax, ay, az)
            heart = _ramp(heart_sd, px) * _ramp(zl - c["dome"] + 2.0, px)
            cont = _lerp(cont, f32(hu["heart"]), heart)
        for (cx, cyy, cz, cr) in self.coronary:
            dz = zl - cz
            if abs(dz) < cr + thickness / 2:
                rr = np.sqrt(max(cr * cr - dz * dz, 0.15))
                cont = _lerp(cont, f32(hu["coronary_calcium"]), _ramp(rr - np.hypot(xl - cx, yl - cyy), px) * 0.8)
        ar, dr = c["aorta_r"]
        za = self.z_arch
        ha = hz + az * 0.55
        aorta_sd = None
        if zl < za:
            aorta_sd = dr - c["d_desc"]
            if zl > ha:
                aorta_sd = np.maximum(aorta_sd, ar - c["d_asc"])
        if abs(zl - za) < (ar + dr) / 2 + 3.0:
            arch = (ar + dr) / 2 - np.sqrt(c["arch_ring"] + (zl - za) ** 2)
            aorta_sd = arch if aorta_sd is None else np.maximum(aorta_sd, arch)
        if aorta_sd is not None:
            cont = _lerp(cont, f32(hu["blood"]), _ramp(aorta_sd, px))
        s = self.a0 / 155.0
        mv_sd = None
        if zl > self.z_arch:
            mv_sd = c["gv_sd"]
        elif zl > hz + 0.4 * az:
            mv_sd = c["svc_sd"]
        if mv_sd is not None:
            cont = _lerp(cont, f32(hu["blood"]), _ramp(mv_sd, px))
        cont = _lerp(cont, f32(hu["muscle"]), c["paraspinal"])
        cont = _lerp(cont, f32(hu["muscle"] - 10), _ramp(7.0 * s - c["eso_d"], px) * (1 - below))

        # ---- lungs
        lung_sd = np.minimum(depth - d_cav, zl - c["dome"])
        lung_sd = np.minimum(lung_sd, c["static_sd"])
        if heart_sd is not None:
            lung_sd = np.minimum(lung_sd, -((1.0 - np.sqrt(c["heart_qi"] + ((zl - hz) / (az + self.peri_fat)) ** 2))
                                            * (min(ax, ay, az) + self.peri_fat)))
        if aorta_sd is not None:
            lung_sd = np.minimum(lung_sd, -(aorta_sd + 2.0))
        if mv_sd is not None:
            lung_sd = np.minimum(lung_sd, -(mv_sd + 3.0))
        if t > 0.7:
            lung_sd = np.minimum(lung_sd, self.apex_sd(xl, yl, zl, c["right"]))
        else:
            lung_sd = np.minimum(lung_sd, c["apex0"])
        right = c["right"]
        lung = _ramp(lung_sd, px)
        lhu = lung_field if lung_field is not None else f32(self.lung_hu)
        lhu = lhu + f32(hu["lung_gravity_gradient"]) * c["grav"]
        if emph_field is not None and self.emphysema > 0:
            up = float(np.clip((t - 0.35) / 0.4, 0.0, 1.0))
            if up > 0:
                e = np.clip((emph_field - (1.0 - self.emphysema * 2.2 * up)) * 4.0, 0.0, 1.0)
                lhu = _lerp(lhu, f32(hu["emphysema"]), e)
        zf, zh = c["fis_z"], c["fis_h"]
        lower = zl < zf
        lobe = np.where(right, np.where(lower, 3, np.where(zl < zh, 2, 1)), np.where(lower, 5, 4)).astype(np.uint8)
        if fissures:
            slope = c["fis_slope"]
            nrm = np.sqrt(1.0 + slope * slope)
            w = (slope * px + thickness) / nrm
            d = (zl - zf) / nrm
            tau = 0.22
            occ = np.minimum(tau / w, 1.0) * np.clip(1.0 - np.abs(d) / w, 0.0, 1.0)
            wh = thickness + 0.1 * px
            occ_h = min(tau / wh, 1.0) * np.clip(1.0 - np.abs(zl - zh) / wh, 0.0, 1.0) * (right & ~lower)
            lhu = _lerp(lhu, f32(hu["fissure"]), np.maximum(occ, occ_h))
        cont = _lerp(cont, lhu, lung)
        tissue = _lerp(tissue, cont, cav)

        # ---- bones
        phase = ((self.rib_z1 - zl) / self.rib_pitch) % 1.0  # 0 at a rib head level
        key = (0.55 < phase < 0.72, phase < 0.45, 0.2 < phase < 0.75)
        if key not in c["vert"]:
            c["vert"][key] = self._vertebra(c, px, hu, *key)
        v_bone, v_hu, v_disc, v_canal = c["vert"][key]
        bone = v_bone.copy()
        bone_hu = v_hu.copy()
        if v_disc is not None:
            tissue = _lerp(tissue, f32(hu["disc"]), v_disc)
        tissue = _lerp(tissue, f32(hu["csf"]), v_canal)

        def add_bone(occ, val):
            nonlocal bone, bone_hu
            bone_hu = np.where(occ > bone, val, bone_hu)
            bone = np.maximum(bone, occ)

        if 0.3 < t < 0.8:
            ys = -(self.b0 - self.fat * 1.1 - self.m_ant * 0.5 - 9.0)
            wst = (13.0 + 12.0 * np.clip((t - 0.65) / 0.1, 0, 1)) * s
            dst = np.sqrt((xl / wst) ** 2 + ((yl - ys) / (6.5 * s)) ** 2)
            st = _ramp((1.0 - dst) * 6.5 * s, px)
            add_bone(st, _lerp(f32(hu["rib_marrow"]), f32(hu["bone_cortical"] * 0.8), np.clip((dst - 0.7) / 0.3, 0, 1)))
        # ribs: tilted rings in the chest wall, integrated analytically over the slice thickness; evaluated
        # only in the ring of the chest wall where they can be (precomputed while the body outline is fixed)
        if t <= 0.76:
            idx = c["ring"]
            xs, ys, drop = c["ring_x"], c["ring_y"], c["ring_drop"]
        else:
            idx = np.arange(xl.size)
            xs, ys, drop = xl.ravel(), yl.ravel(), c["drop"].ravel()
        dr_ = depth.ravel()[idx] - d_cav.ravel()[idx] + (self.rib_ar + 1.0)
        zr = zl + drop
        n = np.round((self.rib_z1 - zr) / self.rib_pitch)
        dz = zr - (self.rib_z1 - n * self.rib_pitch)
        hz_ = self.rib_bz * np.sqrt(np.clip(1.0 - (dr_ / self.rib_ar) ** 2, 0.0, 1.0))
        lo = np.maximum(dz - thickness / 2, -hz_)
        hi = np.minimum(dz + thickness / 2, hz_)
        rib_occ = np.clip(hi - lo, 0.0, None) / max(thickness, 1e-3)
        rib_occ = np.minimum(rib_occ, _ramp(self.rib_ar - np.abs(dr_), px))
        ok = (n >= 0) & (n <= 11) & (np.abs(xs) > (self.r_vb + 14.0 * s))
        ant_end = np.abs(xs) > (0.38 + 0.02 * n) * self.a0
        is_bone = (ys >= 0) | ant_end
        cart = ~is_bone & (np.abs(xs) > 16.0 * s) & (n <= 7)
        rib_occ = rib_occ * ok
        hr = np.clip((np.abs(dr_) - (self.rib_ar - 1.3)) / 1.3, 0, 1)
        hr = np.maximum(hr, np.clip((np.abs(dz) - (self.rib_bz - 1.5)) / 1.5, 0, 1))
        occb = (rib_occ * is_bone).astype(f32)
        valb = _lerp(f32(hu["rib_marrow"]), f32(hu["bone_cortical"]), hr).astype(f32)
        bflat, hflat = bone.reshape(-1), bone_hu.reshape(-1)
        cur = bflat[idx]
        hflat[idx] = np.where(occb > cur, valb, hflat[idx])
        bflat[idx] = np.maximum(cur, occb)
        tissue = np.array(np.broadcast_to(tissue, xl.shape), f32)
        tflat = tissue.reshape(-1)
        tflat[idx] = _lerp(tflat[idx], f32(hu["cartilage"]), rib_occ * cart)
        if t > 0.5:
            dsc = depth - (self.fat + 6.0)
            ang = np.abs(xl) / r
            sc = _ramp(2.5 - np.abs(dsc), px) * ((yl > 0.15 * self.b0) & (ang > 0.45) & (ang < 0.92))
            sc = sc * float(np.clip((t - 0.5) / 0.08, 0, 1) * np.clip((1.02 - t) / 0.05, 0, 1))
            add_bone(sc, f32(hu["bone_cortical"] * 0.75))

        tissue = _lerp(tissue, bone_hu, bone)
        img = _lerp(img, tissue, body)
        inl = lung >= 0.5
        lung_label = np.where(inl, np.where(right, 1, 2), 0).astype(np.uint8)
        lobe_label = np.where(inl, lobe, 0).astype(np.uint8)
        soft = cav * body * (1.0 - bone) * (1.0 - below)
        return img.astype(f32), lung_label, lobe_label, soft.astype(f32)


def hu_grav_profile(yl, b0):
    """0 at the anterior lung, 1 at the posterior (dependent) lung, squared."""
    return np.clip((yl + b0 * 0.7) / (b0 * 1.3), 0.0, 1.0) ** 2
