"""Sensor-product readers: each test writes a tiny file in the product's layout (ENVI with bbl / ignore value /
scale factor, GeoTIFF with band tags or an EnMAP METADATA.XML, EMIT NetCDF with its groups and GLT, PRISMA .he5)
and checks the Scene load_scene returns: values, dropped bands, no-data mask, sorted wavelengths, geo fields."""

from __future__ import annotations

import sys
from pathlib import Path

import h5py
import numpy as np
import pytest

from data.io import load_scene
from tests.fakes import LogRecords
from utils.errors import DataError

H, W, B = 6, 5, 4
WKT_UTM = ('PROJCS["WGS 84 / UTM zone 11N",GEOGCS["WGS 84",DATUM["WGS_1984",SPHEROID["WGS 84",6378137,298.257223563]],'
           'PRIMEM["Greenwich",0],UNIT["degree",0.0174532925199433]],PROJECTION["Transverse_Mercator"],'
           'PARAMETER["latitude_of_origin",0],PARAMETER["central_meridian",-117],PARAMETER["scale_factor",0.9996],'
           'PARAMETER["false_easting",500000],PARAMETER["false_northing",0],UNIT["metre",1],AUTHORITY["EPSG","32611"]]')
SHARED = Path(__file__).resolve().parents[2] / "shared" / "data" / "had" / "abu-urban-1.npz"


def _cube(bands=B, seed=0):
    return np.random.default_rng(seed).uniform(0.1, 1.0, (H, W, bands)).astype(np.float32)


@pytest.fixture
def log_records():
    with LogRecords.attached() as records:
        yield records


# ----------------------------------------------------------------------------------------------
# ENVI

def _write_envi(path, cube, **metadata):
    from spectral.io import envi

    envi.save_image(str(path), cube, dtype=cube.dtype, interleave="bil", metadata=metadata, force=True)
    return path


def test_envi_bbl_ignore_value_scale_fwhm_units_and_map_info(tmp_path):
    stored = np.round(_cube() * 10000).astype(np.int16)
    stored[0, 0, :] = -9999          # a no-data pixel
    stored[1, 2, 3] = -9999          # an isolated dead value in a valid pixel
    hdr = _write_envi(tmp_path / "ang.hdr", stored, **{
        "wavelength": [0.45, 0.55, 0.65, 0.75], "wavelength units": "Micrometers", "fwhm": [0.01] * 4,
        "bbl": [1, 0, 1, 1], "data ignore value": -9999, "reflectance scale factor": 10000,
        "map info": ["UTM", 1, 1, 500000.0, 4000000.0, 5.0, 5.0, 11, "North", "WGS-84", "units=Meters"],
        "coordinate system string": WKT_UTM})
    scene = load_scene(hdr)
    keep = [0, 2, 3]
    expect = stored[:, :, keep].astype(np.float32) / np.float32(10000)
    assert scene.cube.shape == (H, W, 3) and not isinstance(scene.cube, np.memmap)
    assert np.isnan(scene.cube[0, 0]).all() and np.isnan(scene.cube[1, 2, 2])
    finite = np.isfinite(scene.cube)
    assert finite.sum() == H * W * 3 - 4 and np.array_equal(scene.cube[finite], expect[finite])
    assert np.allclose(scene.wavelengths, [450, 650, 750]) and np.allclose(scene.fwhm, 10)
    assert scene.bad_bands == [{"index": 1, "wavelength": pytest.approx(550.0)}]
    assert scene.valid.sum() == H * W - 1 and not scene.valid[0, 0]
    assert scene.geo.transform == (5.0, 0.0, 500000.0, 0.0, -5.0, 4000000.0)
    assert scene.geo.crs.replace(" ", "") == WKT_UTM.replace(" ", "")


def test_envi_plain_stays_memmap_and_utm_map_info_without_wkt_gives_epsg(tmp_path):
    cube = _cube()
    hdr = _write_envi(tmp_path / "plain.hdr", cube, wavelength=[400, 500, 600, 700], bbl=[1, 1, 1, 1],
                      **{"data ignore value": -9999,
                         "map info": ["UTM", 2, 3, 1000.0, 2000.0, 30.0, 30.0, 33, "South", "WGS-84"]})
    scene = load_scene(hdr)
    assert isinstance(scene.cube, np.memmap) and np.array_equal(np.asarray(scene.cube), cube)
    assert scene.valid is None and scene.bad_bands == []
    assert scene.geo.crs == "EPSG:32733"
    assert scene.geo.transform == (30.0, 0.0, 1000.0 - 30.0, 0.0, -30.0, 2000.0 + 60.0)


# ----------------------------------------------------------------------------------------------
# GeoTIFF

def _write_tiff(path, cube, crs="EPSG:32611", nodata=None, band_tags=None, tags=None, descriptions=None):
    import rasterio
    from rasterio.transform import from_origin

    profile = dict(driver="GTiff", height=cube.shape[0], width=cube.shape[1], count=cube.shape[2],
                   dtype=cube.dtype.name, transform=from_origin(300000.0, 4100000.0, 30.0, 30.0), nodata=nodata)
    if crs:
        profile["crs"] = crs
    with rasterio.open(path, "w", **profile) as out:
        out.write(np.moveaxis(cube, -1, 0))
        for band, band_tag in enumerate(band_tags or [], start=1):
            out.update_tags(band, **band_tag)
        if tags:
            out.update_tags(**tags)
        for band, text in enumerate(descriptions or [], start=1):
            out.set_band_description(band, text)
    return path


def _enmap_xml(path, wavelengths, fwhm, gains, offsets):
    rows = "".join(f'<bandID number="{i + 1}"><wavelengthCenterOfBand>{w}</wavelengthCenterOfBand>'
                   f"<FWHMOfBand>{f}</FWHMOfBand><GainOfBand>{g}</GainOfBand><OffsetOfBand>{o}</OffsetOfBand>"
                   f"</bandID>" for i, (w, f, g, o) in enumerate(zip(wavelengths, fwhm, gains, offsets)))
    path.write_text(f'<?xml version="1.0"?><level_X><specific><bandCharacterisation>{rows}'
                    f"</bandCharacterisation></specific></level_X>")


TIFF_WAVELENGTHS = {  # how the wavelengths are stored -> writer keyword arguments
    "band tags": lambda: dict(band_tags=[{"wavelength": str(w), "fwhm": "8"} for w in (500, 400, 600, 700)]),
    "ENVI-style list": lambda: dict(tags={"wavelength": "{500, 400, 600, 700}", "wavelength_units": "Nanometers",
                                          "fwhm": "{8, 8, 8, 8}"}),
    "micrometre list": lambda: dict(tags={"wavelength": "{0.5, 0.4, 0.6, 0.7}", "fwhm": "{0.008,0.008,0.008,0.008}"}),
    "descriptions": lambda: dict(descriptions=["Band 1 (500 nm)", "Band 2 (400 nm)", "Band 3 (600 nm)",
                                               "Band 4 (700 nm)"]),
}


@pytest.mark.parametrize("kind", sorted(TIFF_WAVELENGTHS))
def test_geotiff_wavelengths_nodata_and_georeference(tmp_path, kind):
    cube = _cube()
    cube[2, 3, :] = -9999.0
    path = _write_tiff(tmp_path / "cube.tif", cube, nodata=-9999.0, **TIFF_WAVELENGTHS[kind]())
    scene = load_scene(path)
    assert np.allclose(scene.wavelengths, [500, 400, 600, 700])  # kept in band order; preprocessing sorts
    assert (scene.fwhm is None) == (kind == "descriptions") and (scene.fwhm is None or np.allclose(scene.fwhm, 8))
    assert not scene.valid[2, 3] and scene.valid.sum() == H * W - 1 and np.isnan(scene.cube[2, 3]).all()
    assert np.array_equal(scene.cube[scene.valid], cube[scene.valid])
    assert scene.geo.transform == (30.0, 0.0, 300000.0, 0.0, -30.0, 4100000.0) and "32611" in scene.geo.crs


def test_geotiff_enmap_metadata_xml_gains_and_filled_bad_band(tmp_path):
    stored = np.round(_cube(5) * 10000).astype(np.int16)
    stored[:, :, 3] = -32768     # EnMAP fills its bad bands with the nodata value
    stored[0, 1, :] = -32768     # a no-data pixel
    stem = "ENMAP01-____L2A-DT0000001867_20220724T104526Z_008_V010302_20230628T165614Z"
    path = _write_tiff(tmp_path / f"{stem}-SPECTRAL_IMAGE.TIF", stored, nodata=-32768)
    _enmap_xml(tmp_path / f"{stem}-METADATA.XML", [420, 430, 440, 1400, 2400], [6, 6, 7, 9, 9],
               [0.0001] * 5, [0.0, 0.0, 0.0, 0.0, 0.01])
    scene = load_scene(path)
    assert np.allclose(scene.wavelengths, [420, 430, 440, 2400]) and np.allclose(scene.fwhm, [6, 6, 7, 9])
    assert scene.bad_bands == [{"index": 3, "wavelength": 1400.0}]
    expect = stored[:, :, [0, 1, 2, 4]].astype(np.float32) * np.float32(0.0001) + np.float32([0, 0, 0, 0.01])
    assert np.allclose(scene.cube[scene.valid], expect[scene.valid]) and np.isnan(scene.cube[0, 1]).all()


@pytest.mark.parametrize("case", ["no wavelengths", "no crs"])
def test_geotiff_warnings(tmp_path, log_records, case):
    kwargs = {"crs": None, **TIFF_WAVELENGTHS["band tags"]()} if case == "no crs" else {}
    scene = load_scene(_write_tiff(tmp_path / "w.tif", _cube(), **kwargs))
    said = " ".join(log_records.warnings())
    if case == "no wavelengths":
        assert scene.wavelengths is None and "no band wavelengths" in said and "band index" in said
    else:
        assert scene.geo.crs is None and scene.geo.transform[2] == 300000.0 and "no CRS" in said


# ----------------------------------------------------------------------------------------------
# EMIT

def _write_emit(path, cube, good=None, glt=True, fill_pixel=None, name="reflectance"):
    import xarray as xr

    bands = cube.shape[2]
    cube = cube.copy()
    if fill_pixel is not None:
        cube[fill_pixel] = -9999.0
    root = xr.Dataset({name: (("downtrack", "crosstrack", "bands"), cube, {"_FillValue": -9999.0})},
                      attrs={"geotransform": np.array([-117.0, 0.0005, 0.0, 34.0, 0.0, -0.0005]),
                             "spatial_ref": 'GEOGCS["WGS 84",DATUM["WGS_1984"]]'})
    root.to_netcdf(path, engine="h5netcdf")
    wavelengths = np.linspace(2400, 400, bands)[::-1].astype(np.float32)
    xr.Dataset({"wavelengths": ("bands", wavelengths), "fwhm": ("bands", np.full(bands, 8.5, np.float32)),
                "good_wavelengths": ("bands", np.asarray(good if good is not None else [1] * bands, np.uint8))}
               ).to_netcdf(path, mode="a", group="sensor_band_parameters", engine="h5netcdf")
    location = {"lat": (("downtrack", "crosstrack"), np.full(cube.shape[:2], 34.0)),
                "lon": (("downtrack", "crosstrack"), np.full(cube.shape[:2], -117.0))}
    if glt:
        glt_x = np.zeros((H + 1, W + 1), np.int32)
        glt_y = np.zeros((H + 1, W + 1), np.int32)
        glt_x[:H, :W] = np.arange(1, W + 1)[None, :]
        glt_y[:H, :W] = np.arange(1, H + 1)[:, None]
        location.update(glt_x=(("ortho_y", "ortho_x"), glt_x), glt_y=(("ortho_y", "ortho_x"), glt_y))
    xr.Dataset(location).to_netcdf(path, mode="a", group="location", engine="h5netcdf")
    return path, wavelengths


@pytest.mark.parametrize("name", ["reflectance", "radiance"])
def test_emit_good_wavelengths_fill_and_glt(tmp_path, name):
    cube = _cube(5)
    path, wavelengths = _write_emit(tmp_path / "EMIT_L2A_RFL.nc", cube, good=[1, 1, 0, 1, 1], fill_pixel=(4, 1),
                                    name=name)
    scene = load_scene(path)
    keep = [0, 1, 3, 4]
    assert np.allclose(scene.wavelengths, wavelengths[keep]) and np.allclose(scene.fwhm, 8.5)
    assert scene.bad_bands == [{"index": 2, "wavelength": pytest.approx(float(wavelengths[2]))}]
    assert not scene.valid[4, 1] and scene.valid.sum() == H * W - 1 and np.isnan(scene.cube[4, 1]).all()
    assert np.array_equal(scene.cube[scene.valid], cube[:, :, keep][scene.valid])
    geo = scene.geo
    assert geo.crs is None and geo.transform is None and "WGS 84" in geo.glt_crs
    assert geo.glt_transform == (0.0005, 0.0, -117.0, 0.0, -0.0005, 34.0)
    assert geo.glt.shape == (H + 1, W + 1, 2) and tuple(geo.glt[2, 3]) == (2, 3) and tuple(geo.glt[H, W]) == (-1, -1)
    assert geo.lat.shape == (H, W) and geo.lon[0, 0] == -117.0


# ----------------------------------------------------------------------------------------------
# PRISMA

def _write_prisma(path, level="L2D", swir=True, rows=H, cols=W):
    rng = np.random.default_rng(3)
    vnir_dn = rng.integers(1, 65535, (rows, 4, cols), dtype=np.uint16)   # stored (rows, bands, cols)
    swir_dn = rng.integers(1, 65535, (rows, 3, cols), dtype=np.uint16)
    vnir_dn[0, :, 0] = 0
    swir_dn[0, :, 0] = 0  # a pixel with DN 0 everywhere: no data
    with h5py.File(path, "w") as f:
        swath = f.create_group(f"HDFEOS/SWATHS/PRS_{level}_HCO")
        fields = swath.create_group("Data Fields")
        fields["VNIR_Cube"] = vnir_dn
        if swir:
            fields["SWIR_Cube"] = swir_dn
        geo = swath.create_group("Geolocation Fields")
        geo["Latitude" if level.startswith("L2") else "Latitude_VNIR"] = np.full((rows, cols), 45.0, np.float32)
        geo["Longitude" if level.startswith("L2") else "Longitude_VNIR"] = np.full((rows, cols), 9.0, np.float32)
        f.attrs["List_Cw_Vnir"] = np.array([980.0, 700.0, 500.0, 0.0], np.float32)   # descending, one empty
        f.attrs["List_Fwhm_Vnir"] = np.array([12.0, 11.0, 10.0, 0.0], np.float32)
        f.attrs["List_Cw_Vnir_Flags"] = np.array([1, 1, 1, 0], np.int8)
        f.attrs["List_Cw_Swir"] = np.array([2000.0, 1500.0, 980.0], np.float32)       # 980 duplicates VNIR
        f.attrs["List_Fwhm_Swir"] = np.array([9.0, 9.5, 13.0], np.float32)
        f.attrs["List_Cw_Swir_Flags"] = np.array([0, 1, 1], np.int8)                   # 2000 flagged
        f.attrs["L2ScaleVnirMin"], f.attrs["L2ScaleVnirMax"] = 0.0, 1.0
        f.attrs["L2ScaleSwirMin"], f.attrs["L2ScaleSwirMax"] = 0.1, 0.9
        f.attrs["ScaleFactor_Vnir"], f.attrs["Offset_Vnir"] = 100.0, 0.0
        f.attrs["ScaleFactor_Swir"], f.attrs["Offset_Swir"] = 50.0, 1.0
        f.attrs["Epsg_Code"] = 32632
        f.attrs["Product_ULcorner_easting"], f.attrs["Product_ULcorner_northing"] = 500000.0, 5000000.0
        f.attrs["Product_LRcorner_easting"] = 500000.0 + 30.0 * cols
        f.attrs["Product_LRcorner_northing"] = 5000000.0 - 30.0 * rows
    return path, vnir_dn, swir_dn


@pytest.mark.parametrize("level", ["L2D", "L1"])
def test_prisma_merged_sorted_flagged_scaled(tmp_path, level):
    path, vnir_dn, swir_dn = _write_prisma(tmp_path / f"PRS_{level}_STD.he5", level)
    scene = load_scene(path)
    assert np.allclose(scene.wavelengths, [500, 700, 980, 1500]) and np.allclose(scene.fwhm, [10, 11, 13, 9.5])
    # raw index: VNIR 0..3, SWIR 4..6; dropped: VNIR 980 (duplicate of SWIR 980), VNIR 0 nm, SWIR 2000 (flag 0)
    assert scene.bad_bands == [{"index": 0, "wavelength": 980.0}, {"index": 3, "wavelength": None},
                               {"index": 4, "wavelength": 2000.0}]
    if level == "L2D":
        v = lambda dn: np.float32(0) + dn.astype(np.float32) * np.float32(1 / 65535)  # noqa: E731
        s = lambda dn: np.float32(0.1) + dn.astype(np.float32) * np.float32(0.8 / 65535)  # noqa: E731
    else:
        v = lambda dn: dn.astype(np.float32) / np.float32(100)  # noqa: E731
        s = lambda dn: dn.astype(np.float32) / np.float32(50) - np.float32(1)  # noqa: E731
    expect = np.stack([v(vnir_dn[:, 2]), v(vnir_dn[:, 1]), s(swir_dn[:, 2]), s(swir_dn[:, 1])], axis=-1)
    assert not scene.valid[0, 0] and scene.valid.sum() == H * W - 1
    assert np.allclose(scene.cube[scene.valid], expect[scene.valid], rtol=1e-6, atol=1e-6)
    assert scene.geo.lat.shape == (H, W) and scene.geo.lon[0, 0] == 9.0
    if level == "L2D":
        assert scene.geo.crs == "EPSG:32632" and scene.geo.transform == (30.0, 0.0, 500000.0, 0.0, -30.0, 5000000.0)
    else:
        assert scene.geo.crs is None and scene.geo.transform is None


# ----------------------------------------------------------------------------------------------
# Bad input: one-line DataErrors naming the file and the problem

def _truncated_netcdf(tmp_path):
    path, _ = _write_emit(tmp_path / "cut.nc", _cube())
    data = path.read_bytes()
    path.write_bytes(data[: len(data) // 2])
    return path


def _all_nodata_tiff(tmp_path):
    return _write_tiff(tmp_path / "void.tif", np.full((H, W, B), -9999.0, np.float32), nodata=-9999.0)


def _mostly_nodata_envi(tmp_path):
    cube = np.full((H, W, B), -1.0, np.float32)
    cube[0, :2] = _cube()[0, :2]  # 2 of 30 pixels hold data
    return _write_envi(tmp_path / "sparse.hdr", cube, **{"data ignore value": -1})


BAD_INPUT = {
    "truncated NetCDF": (_truncated_netcdf, r"cut\.nc: not a readable EMIT NetCDF"),
    "PRISMA without SWIR": (lambda p: _write_prisma(p / "noswir.he5", swir=False)[0],
                            r"noswir\.he5: the SWIR cube \(Data Fields/SWIR_Cube\) is missing"),
    "all no-data": (_all_nodata_tiff, r"void\.tif: .*no-data|void\.tif: every band holds only the nodata"),
    "mostly no-data": (_mostly_nodata_envi, r"sparse\.hdr: 93\.3% of the pixels are no-data"),
    "EMIT without location": (lambda p: _emit_without(p, "location"), r"nogroup\.nc: no group 'location'"),
}


def _emit_without(tmp_path, group):
    import xarray as xr

    path = tmp_path / "nogroup.nc"
    xr.Dataset({"reflectance": (("downtrack", "crosstrack", "bands"), _cube())}).to_netcdf(path, engine="h5netcdf")
    xr.Dataset({"wavelengths": ("bands", np.arange(B, dtype=np.float32) + 400)}).to_netcdf(
        path, mode="a", group="sensor_band_parameters", engine="h5netcdf")
    return path


@pytest.mark.parametrize("case", sorted(BAD_INPUT))
def test_bad_input_is_one_line_data_error(tmp_path, case):
    make, message = BAD_INPUT[case]
    path = make(tmp_path)
    with pytest.raises(DataError, match=message) as err:
        load_scene(path)
    assert "\n" not in str(err.value) and path.name in str(err.value)


@pytest.mark.parametrize("module, suffix", [("rasterio", ".tif"), ("xarray", ".nc"), ("h5netcdf", ".nc")])
def test_missing_optional_dependency_names_the_pip_command(tmp_path, monkeypatch, module, suffix):
    path = tmp_path / f"x{suffix}"
    path.write_bytes(b"\0" * 16)
    monkeypatch.setitem(sys.modules, module, None)  # `import module` now raises ImportError
    with pytest.raises(DataError, match=rf"x\{suffix}: reading .* needs the Python package {module}: "
                                        rf"pip install '{module}>="):
        load_scene(path)


# ----------------------------------------------------------------------------------------------
# A shared scene written to each product format reads back as its .npz cube

@pytest.mark.skipif(not SHARED.is_file(), reason=f"shared scene not present at {SHARED}")
@pytest.mark.parametrize("kind", ["envi", "geotiff", "emit"])
def test_shared_scene_round_trips_through_each_product(tmp_path, kind):
    with np.load(SHARED) as npz:
        cube = np.ascontiguousarray(npz["cube"], dtype=np.float32)
    bands = cube.shape[2]
    bad = 7
    keep = [b for b in range(bands) if b != bad]
    if kind == "envi":
        bbl = [0 if b == bad else 1 for b in range(bands)]
        path = _write_envi(tmp_path / "scene.hdr", cube, bbl=bbl, wavelength=list(np.arange(bands) * 5.0 + 400))
        expect, dropped = cube[:, :, keep], [bad]
    elif kind == "geotiff":
        path = _write_tiff(tmp_path / "scene.tif", cube)
        expect, dropped = cube, []
    else:
        import xarray as xr

        path = tmp_path / "scene.nc"
        xr.Dataset({"reflectance": (("downtrack", "crosstrack", "bands"), cube)}).to_netcdf(path, engine="h5netcdf")
        good = np.ones(bands, np.uint8)
        good[bad] = 0
        xr.Dataset({"wavelengths": ("bands", np.arange(bands, dtype=np.float32) * 5 + 400),
                    "good_wavelengths": ("bands", good)}).to_netcdf(path, mode="a", group="sensor_band_parameters",
                                                                    engine="h5netcdf")
        xr.Dataset({}).to_netcdf(path, mode="a", group="location", engine="h5netcdf")
        expect, dropped = cube[:, :, keep], [bad]
    scene = load_scene(path)
    assert scene.cube.shape == expect.shape and np.array_equal(np.asarray(scene.cube), expect)
    assert [b["index"] for b in scene.bad_bands] == dropped and scene.valid is None
