"""Files in the shapes real facilities write them, for the tests and the benchmark.

Each writer takes a path (or a directory) and keyword options and returns what it wrote,
so a test can assert the extracted values against what went in. Shapes follow:
Diamond's GDA scans (several ``entryN``, ``before_scan`` collections, ``user01``),
Dectris EIGER NXmx masters with ``data_000001``... external links (and the VDS variant
Diamond's Odin writers produce), nexusformat's own files, areaDetector-style plain
HDF5, SWMR writers, and the bad files a storage node meets.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

import h5py
import numpy as np

#: How a string can be stored; :func:`put_string` writes each of them.
STRING_FORMS = (
    "fixed",  # fixed-length ASCII bytes (h5py: np.bytes_)
    "fixed-utf8",  # fixed-length bytes tagged UTF-8
    "fixed-nulpad",  # fixed length, padded with NULs beyond the text
    "vlen-str",  # variable-length UTF-8 (h5py: str)
    "vlen-bytes",  # variable-length ASCII bytes
    "array1-fixed",  # a one-element array of fixed-length strings
    "array1-vlen",  # a one-element array of variable-length strings
    "array2d1-vlen",  # a (1, 1) array, as some Java writers make
    "char-array",  # an array of single characters (old Fortran/IDL writers)
)


def put_string(parent: Any, name: str, text: str, form: str, *, attr: bool = False) -> None:
    """Store ``text`` as a dataset (or attribute, ``attr=True``) of ``parent`` in ``form``."""
    raw = text.encode("utf-8", "surrogateescape")
    text = raw.decode("utf-8", "replace")
    data: Any
    dtype: Any = None
    if form == "fixed":
        data = np.bytes_(raw)
    elif form == "fixed-utf8":
        dtype = h5py.string_dtype("utf-8", len(raw) or 1)
        data = np.array(raw, dtype=dtype)
    elif form == "fixed-nulpad":
        data = np.array(raw + b"\x00" * 7, dtype=f"S{len(raw) + 7}")
        dtype = h5py.string_dtype("ascii", len(raw) + 7)
    elif form == "vlen-str":
        data = text
        dtype = h5py.string_dtype("utf-8")
    elif form == "vlen-bytes":
        data = raw
        dtype = h5py.string_dtype("ascii")
    elif form == "array1-fixed":
        data = np.array([raw])
    elif form == "array1-vlen":
        dtype = h5py.string_dtype("utf-8")
        data = np.array([text], dtype=dtype)
    elif form == "array2d1-vlen":
        dtype = h5py.string_dtype("utf-8")
        data = np.array([[text]], dtype=dtype)
    elif form == "char-array":
        data = np.array([bytes([b]) for b in raw], dtype="S1")
    else:
        raise ValueError(form)
    if attr:
        if dtype is not None:
            parent.attrs.create(name, data, dtype=dtype)
        else:
            parent.attrs[name] = data
    elif dtype is not None:
        if form == "fixed-nulpad":
            tid = h5py.h5t.C_S1.copy()
            tid.set_size(len(raw) + 7)
            tid.set_strpad(h5py.h5t.STR_NULLPAD)
            space = h5py.h5s.create(h5py.h5s.SCALAR)
            dsid = h5py.h5d.create(parent.id, name.encode(), tid, space)
            dsid.write(
                h5py.h5s.ALL, h5py.h5s.ALL, np.array(raw + b"\x00" * 7, dtype=f"S{len(raw) + 7}")
            )
        else:
            parent.create_dataset(name, data=data, dtype=dtype)
    else:
        parent.create_dataset(name, data=data)


def nx_group(parent: Any, name: str, nx_class: str, *, form: str = "fixed") -> Any:
    group = parent.create_group(name)
    put_string(group, "NX_class", nx_class, form, attr=True)
    return group


def scalar(parent: Any, name: str, value: float, units: str | None = None) -> Any:
    dataset = parent.create_dataset(name, data=value)
    if units is not None:
        dataset.attrs["units"] = units
    return dataset


def write_gda_scan(
    path: str | Path,
    *,
    entries: int = 3,
    scan_number: int = 12345,
    beamline: str = "i22",
    visit: str = "cm33851-1",
    form: str = "fixed",
    start_time: str = "2023-05-01T12:34:56.123+01:00",
    end_time: str = "2023-05-01T12:44:56.123+01:00",
    frames: int = 10,
    detector_shape: tuple[int, int] = (195, 487),
) -> dict[str, Any]:
    """A GDA (Diamond) scan: ``entry1``..``entryN``, instrument, sample, user01, NXdata."""
    with h5py.File(path, "w") as f:
        f.attrs["HDF5_Version"] = h5py.version.hdf5_version
        put_string(f, "file_name", str(path), "vlen-str", attr=True)
        for index in range(1, entries + 1):
            entry = nx_group(f, f"entry{index}", "NXentry", form=form)
            put_string(entry, "title", f"{beamline} scan {scan_number} part {index}", form)
            put_string(entry, "start_time", start_time, form)
            put_string(entry, "end_time", end_time, form)
            put_string(entry, "experiment_identifier", visit, form)
            put_string(entry, "entry_identifier", str(scan_number), form)
            put_string(entry, "program_name", "GDA 9.29.0", form)
            put_string(entry["program_name"], "version", "9.29.0", "vlen-str", attr=True)
            put_string(entry, "scan_command", f"scan x 1 10 1 pilatus 0.1 # {index}", "vlen-str")
            put_string(entry, "definition", "NXscan", form)
            before = nx_group(entry, "before_scan", "NXcollection")
            scalar(before, "ring_current", 299.8, "mA")
            instrument = nx_group(entry, "instrument", "NXinstrument", form=form)
            put_string(instrument, "name", beamline, form)
            source = nx_group(instrument, "source", "NXsource", form=form)
            put_string(source, "name", "Diamond Light Source", form)
            put_string(source, "type", "Synchrotron X-ray Source", form)
            put_string(source, "probe", "x-ray", form)
            scalar(source, "energy", 3.0, "GeV")
            scalar(source, "current", 299.8, "mA")
            mono = nx_group(instrument, "monochromator", "NXmonochromator", form=form)
            scalar(mono, "energy", 12.4, "keV")
            scalar(mono, "wavelength", 0.99987, "Angstrom")
            detector = nx_group(instrument, "pilatus", "NXdetector", form=form)
            put_string(detector, "description", "Pilatus 2M", form)
            detector.create_dataset(
                "data",
                shape=(frames, *detector_shape),
                dtype="int32",
                chunks=(1, *detector_shape),
                compression="gzip",
            )
            sample = nx_group(entry, "sample", "NXsample", form=form)
            put_string(sample, "name", f"lysozyme {index}", form)
            put_string(sample, "chemical_formula", "C613H959N193O185S10", form)
            put_string(sample, "description", "crystals in 0.1 M NaAc", form)
            scalar(sample, "temperature", 295.0, "K")
            scalar(sample, "pressure", 101.3, "kPa")
            user = nx_group(entry, "user01", "NXuser", form=form)
            put_string(user, "name", "Ada Lovelace", form)
            put_string(user, "affiliation", "Diamond Light Source", form)
            put_string(user, "role", "principal_investigator", form)
            put_string(user, "email", "ada@example.org", form)
            put_string(user, "facility_user_id", "abc12345", form)
            data = nx_group(entry, "pilatus", "NXdata", form=form)
            data["data"] = h5py.SoftLink(f"/entry{index}/instrument/pilatus/data")
            data.attrs["signal"] = "data"
            data.create_dataset("x", data=np.arange(frames, dtype="f8"))
    return {
        "entries": [f"entry{i}" for i in range(1, entries + 1)],
        "title": f"{beamline} scan {scan_number} part 1",
        "frames": frames,
        "detector_shape": detector_shape,
    }


def write_nxmx(
    directory: str | Path,
    prefix: str = "insulin_1",
    *,
    files: int = 3,
    frames_per_file: int = 5,
    image: tuple[int, int] = (32, 32),
    missing: tuple[int, ...] = (),
    virtual: bool = False,
) -> dict[str, Any]:
    """An EIGER-style NXmx master and its data files (``missing`` ones not written).

    With ``virtual=True`` the master holds a virtual dataset over the data files instead
    of ``data_00000N`` external links (Diamond's Odin writers do that).
    """
    directory = Path(directory)
    master = directory / f"{prefix}_master.h5"
    data_files = [directory / f"{prefix}_data_{n:06d}.h5" for n in range(1, files + 1)]
    for number, data_path in enumerate(data_files, start=1):
        if number in missing:
            continue
        with h5py.File(data_path, "w") as f:
            entry = nx_group(f, "entry", "NXentry")
            data = nx_group(entry, "data", "NXdata")
            ds = data.create_dataset(
                "data", shape=(frames_per_file, *image), dtype="uint16", chunks=(1, *image)
            )
            ds.attrs["image_nr_low"] = (number - 1) * frames_per_file + 1
            ds.attrs["image_nr_high"] = number * frames_per_file
    with h5py.File(master, "w") as f:
        entry = nx_group(f, "entry", "NXentry")
        put_string(entry, "definition", "NXmx", "fixed")
        put_string(entry, "start_time", "2023-06-02T08:15:00Z", "fixed")
        put_string(entry, "end_time", "2023-06-02T08:15:30Z", "fixed")
        instrument = nx_group(entry, "instrument", "NXinstrument")
        put_string(instrument, "name", "BioMAX", "fixed")
        beam = nx_group(instrument, "beam", "NXbeam")
        scalar(beam, "incident_wavelength", 0.9795, "angstrom")
        detector = nx_group(instrument, "detector", "NXdetector")
        put_string(detector, "description", "Dectris EIGER2 X 16M", "fixed")
        scalar(detector, "count_time", 0.01, "s")
        sample = nx_group(entry, "sample", "NXsample")
        put_string(sample, "name", "insulin", "fixed")
        data = nx_group(entry, "data", "NXdata")
        if virtual:
            layout = h5py.VirtualLayout(shape=(files * frames_per_file, *image), dtype="uint16")
            for number, data_path in enumerate(data_files):
                source = h5py.VirtualSource(
                    data_path.name, "/entry/data/data", shape=(frames_per_file, *image)
                )
                layout[number * frames_per_file : (number + 1) * frames_per_file] = source
            data.create_virtual_dataset("data", layout, fillvalue=0)
            data.attrs["signal"] = "data"
        else:
            for number, data_path in enumerate(data_files, start=1):
                data[f"data_{number:06d}"] = h5py.ExternalLink(data_path.name, "/entry/data/data")
    return {"master": str(master), "data_files": [str(p) for p in data_files]}


def write_nexusformat(path: str | Path, *, title: str = "nexusformat scan") -> dict[str, Any]:
    """A file written through nexusformat's tree API, as its users write them."""
    from nexusformat.nexus import NXdata, NXentry, NXfield, NXroot, NXsample

    sample = NXsample(temperature=NXfield(77.0, units="K"))
    sample["name"] = NXfield("silicon")
    root = NXroot(
        NXentry(
            sample,
            NXdata(
                NXfield(np.arange(20.0), name="counts"), NXfield(np.linspace(0, 1, 20), name="x")
            ),
            title=title,
            start_time="2024-01-15 09:30:00",
            end_time="2024-01-15 09:40:00",
            definition="NXmonopd",
        )
    )
    root.save(str(path), mode="w")
    return {"title": title}


def write_area_detector(path: str | Path, *, frames: int = 100) -> dict[str, Any]:
    """Plain HDF5 as an area-detector plug-in writes it when not told about NeXus."""
    with h5py.File(path, "w") as f:
        f.attrs["detector"] = "ADSim"
        f.attrs["acquire_time"] = 0.05
        f.create_dataset("data", shape=(frames, 512, 512), dtype="uint16", chunks=(1, 512, 512))
        attrs = f.create_group("NDAttributes")
        attrs.create_dataset("NDArrayUniqueId", data=np.arange(frames))
        attrs.create_dataset("timestamp", data=np.linspace(0, 5, frames))
    return {"shape": [frames, 512, 512]}


def write_with_userblock(path: str | Path, *, userblock: int = 1024) -> None:
    """A NeXus file behind a user block (the signature is at ``userblock``, not 0)."""
    with h5py.File(path, "w", userblock_size=userblock) as f:
        entry = nx_group(f, "entry", "NXentry")
        put_string(entry, "title", "behind a user block", "vlen-str")
    with open(path, "r+b") as handle:
        handle.write(b"#!user block: a header some writers leave\n")


# -- bad files --------------------------------------------------------------------------


def write_bytes(path: str | Path, content: bytes) -> str:
    Path(path).write_bytes(content)
    return str(path)


def write_hdf4_like(path: str | Path) -> str:
    return write_bytes(path, b"\x0e\x03\x13\x01" + b"\x00" * 200)


def write_netcdf3(path: str | Path) -> str:
    # "CDF", version 1, zero records, no dimensions, no attributes, no variables.
    return write_bytes(path, b"CDF\x01" + b"\x00" * 4 + b"\x00" * 24)


def write_truncated(path: str | Path, source: str | Path, keep: float = 0.3) -> str:
    content = Path(source).read_bytes()
    return write_bytes(path, content[: max(16, int(len(content) * keep))])


def write_corrupted(path: str | Path, source: str | Path, *, seed: int = 7) -> str:
    """``source`` with bytes after the superblock overwritten by random noise."""
    content = bytearray(Path(source).read_bytes())
    rng = np.random.default_rng(seed)
    start = 96
    noise = rng.integers(0, 256, size=len(content) - start, dtype=np.uint8).tobytes()
    content[start:] = noise
    return write_bytes(path, bytes(content))


def write_many_attributes(path: str | Path, count: int = 100_000) -> None:
    with h5py.File(path, "w", libver="latest") as f:
        entry = nx_group(f, "entry", "NXentry")
        put_string(entry, "title", "many attributes", "vlen-str")
        attrs = f.attrs
        for index in range(count):
            attrs[f"a{index:06d}"] = index


def write_absurd_shapes(path: str | Path) -> None:
    """Datasets that would be exabytes if anyone read them (chunked, nothing written)."""
    with h5py.File(path, "w") as f:
        entry = nx_group(f, "entry", "NXentry")
        put_string(entry, "title", "absurd", "vlen-str")
        sample = nx_group(entry, "sample", "NXsample")
        sample.create_dataset("name", shape=(2**40,), maxshape=(None,), dtype="S8", chunks=(1024,))
        entry.create_dataset("huge", shape=(2**31, 2**31, 2**20), dtype="f8", chunks=(1, 64, 64))
        entry.create_dataset("null", data=h5py.Empty("f4"))


def write_non_utf8(path: str | Path) -> None:
    """Names and values that are not UTF-8 (Latin-1 from old Windows writers)."""
    with h5py.File(path, "w") as f:
        entry = nx_group(f, "entry", "NXentry")
        entry.create_dataset("title", data=np.bytes_("Température 25 °C".encode("latin-1")))
        sample = nx_group(entry, "sample", "NXsample")
        sample.create_dataset("name", data=np.bytes_(b"caf\xe9"))
        sample.create_group(b"gr\xfcn")
        f.attrs.create(b"n\xe9me", data=np.bytes_(b"x"))
        tid = h5py.h5t.C_S1.copy()
        tid.set_size(h5py.h5t.VARIABLE)
        tid.set_cset(h5py.h5t.CSET_UTF8)
        space = h5py.h5s.create(h5py.h5s.SCALAR)
        attr = h5py.h5a.create(f.id, b"bad_utf8", tid, space)
        attr.write(np.array(b"ab\xff\xfe", dtype=h5py.string_dtype("utf-8")))


def file_size(path: str | Path) -> int:
    return os.stat(path).st_size
