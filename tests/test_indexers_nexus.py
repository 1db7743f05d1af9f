"""NeXus and HDF5 extraction from files in the shapes real facilities write."""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import h5py
import nexus_shapes as shapes
import numpy as np
import pytest

from indexers.base import ExtractResult
from indexers.hdf5 import Hdf5Indexer
from indexers.nexus import NexusIndexer
from indexers.registry import Registry
from indexers.settings import FieldMapping, IndexerSettings


def make_registry(**settings: Any) -> Registry:
    return Registry(
        [NexusIndexer(), Hdf5Indexer()],
        settings=IndexerSettings(isolation="inline", **settings),
    )


@pytest.fixture
def registry() -> Iterator[Registry]:
    with make_registry() as reg:
        yield reg


def extract(registry: Registry, path: Path | str) -> ExtractResult:
    result = registry.extract(str(path))
    # Every result is valid JSON whose strings encode as UTF-8 (the CLI's contract).
    json.dumps(result.to_json(), ensure_ascii=False).encode("utf-8")
    return result


# -- GDA / Diamond scans ------------------------------------------------------------------


def test_gda_scan_several_entries(registry: Registry, tmp_path: Path) -> None:
    path = tmp_path / "i22-12345.nxs"
    shapes.write_gda_scan(path, entries=4, frames=7)
    result = extract(registry, path)
    assert result.ok and result.error is None
    assert result.kind == "nexus"
    assert [e["name"] for e in result.entries] == ["entry1", "entry2", "entry3", "entry4"]
    entry = result.entries[1]
    assert entry["title"] == "i22 scan 12345 part 2"
    assert entry["start_time"] == "2023-05-01T12:34:56.123000+01:00"
    assert entry["end_time"] == "2023-05-01T12:44:56.123000+01:00"
    assert entry["duration"] == 600.0 and entry["duration_units"] == "s"
    assert entry["definition"] == "NXscan"
    assert entry["experiment_identifier"] == "cm33851-1"
    assert entry["entry_identifier"] == "12345"
    assert entry["program_name"] == "GDA 9.29.0"
    assert entry["program_version"] == "9.29.0"
    sample = entry["sample"]
    assert sample["name"] == "lysozyme 2"
    assert sample["chemical_formula"] == "C613H959N193O185S10"
    assert sample["description"] == "crystals in 0.1 M NaAc"
    assert (sample["temperature"], sample["temperature_units"]) == (295.0, "K")
    assert (sample["pressure"], sample["pressure_units"]) == (101.3, "kPa")
    instrument = entry["instrument"]
    assert instrument["name"] == "i22"
    assert instrument["source"]["name"] == "Diamond Light Source"
    assert instrument["source"]["type"] == "Synchrotron X-ray Source"
    assert instrument["source"]["probe"] == "x-ray"
    assert (instrument["source"]["energy"], instrument["source"]["energy_units"]) == (3.0, "GeV")
    assert instrument["monochromator"]["energy"] == 12.4
    assert instrument["monochromator"]["energy_units"] == "keV"
    assert instrument["monochromator"]["wavelength_units"] == "Angstrom"
    [detector] = instrument["detectors"]
    assert detector["name"] == "pilatus"
    assert detector["description"] == "Pilatus 2M"
    assert detector["data_shape"] == [7, 195, 487]
    assert detector["data_dtype"] == "int32"
    [user] = entry["users"]
    assert user == {
        "name": "Ada Lovelace",
        "role": "principal_investigator",
        "affiliation": "Diamond Light Source",
        "facility_user_id": "abc12345",
    }
    [data] = entry["data"]
    assert data["signal"] == "data" and data["shape"] == [7, 195, 487]
    assert "field_errors" not in entry
    structure = result.metadata["structure"]
    assert structure["groups"] > 20 and structure["datasets"] > 40
    assert structure["soft_links"] == 4
    assert structure["root_attributes"]["file_name"] == str(path)
    assert not structure["truncated"]


def test_emails_only_when_configured(tmp_path: Path) -> None:
    path = tmp_path / "scan.nxs"
    shapes.write_gda_scan(path, entries=1)
    with make_registry(keep_emails=True) as reg:
        result = extract(reg, path)
    assert result.entries[0]["users"][0]["email"] == "ada@example.org"


def test_big_arrays_never_read(registry: Registry, tmp_path: Path) -> None:
    path = tmp_path / "scan.nxs"
    shapes.write_gda_scan(path, entries=1, frames=2000, detector_shape=(2000, 2000))
    result = extract(registry, path)
    assert result.elapsed_s < 5
    assert result.entries[0]["instrument"]["detectors"][0]["data_shape"] == [2000, 2000, 2000]


@pytest.mark.parametrize("form", shapes.STRING_FORMS)
def test_every_string_form_in_datasets(registry: Registry, tmp_path: Path, form: str) -> None:
    path = tmp_path / f"{form}.nxs"
    with h5py.File(path, "w") as f:
        entry = shapes.nx_group(f, "entry", "NXentry", form=form)
        shapes.put_string(entry, "title", "Ångström scan", form)
        shapes.put_string(entry, "start_time", "2024-02-03 04:05:06.7+0100", form)
        shapes.put_string(entry, "definition", "NXmx", form)
        program = entry.create_dataset("program_name", data="writer")
        shapes.put_string(program, "version", "1.2", form, attr=True)
        sample = shapes.nx_group(entry, "sample", "NXsample", form=form)
        shapes.put_string(sample, "name", "quartz", form)
    result = extract(registry, path)
    assert result.ok and result.kind == "nexus"
    [entry_out] = result.entries
    expected_title = (
        "Ångström scan" if form not in ("fixed", "char-array", "array1-fixed") else None
    )
    if expected_title is not None:
        assert entry_out["title"] == expected_title
    else:  # stored as bytes without a charset: still UTF-8 when valid
        assert entry_out["title"] == "Ångström scan"
    assert entry_out["start_time"] == "2024-02-03T04:05:06.700000+01:00"
    assert entry_out["definition"] == "NXmx"
    assert entry_out["program_version"] == "1.2"
    assert entry_out["sample"]["name"] == "quartz"


@pytest.mark.parametrize(
    ("stored", "expected"),
    [
        ("2023-05-01T12:34:56", "2023-05-01T12:34:56"),
        ("2023-05-01 12:34:56", "2023-05-01T12:34:56"),
        ("2023-05-01T12:34:56.123456+02:00", "2023-05-01T12:34:56.123456+02:00"),
        ("2023-05-01T12:34:56+0200", "2023-05-01T12:34:56+02:00"),
        ("2023-05-01T12:34:56Z", "2023-05-01T12:34:56+00:00"),
        ("Mon May  1 12:34:56 2023", "2023-05-01T12:34:56"),
    ],
)
def test_time_forms_in_files(
    registry: Registry, tmp_path: Path, stored: str, expected: str
) -> None:
    path = tmp_path / "t.nxs"
    with h5py.File(path, "w") as f:
        entry = shapes.nx_group(f, "entry", "NXentry")
        shapes.put_string(entry, "start_time", stored, "vlen-str")
        shapes.put_string(entry, "end_time", stored, "array1-fixed")
    entry_out = extract(registry, path).entries[0]
    assert entry_out["start_time"] == expected
    assert entry_out["end_time"] == expected
    assert entry_out["duration"] == 0.0


def test_unparseable_time_kept_with_reason(registry: Registry, tmp_path: Path) -> None:
    path = tmp_path / "t.nxs"
    with h5py.File(path, "w") as f:
        entry = shapes.nx_group(f, "entry", "NXentry")
        shapes.put_string(entry, "start_time", "sometime on Tuesday", "fixed")
        shapes.put_string(entry, "title", "still read", "fixed")
    entry_out = extract(registry, path).entries[0]
    assert entry_out["start_time"] == "sometime on Tuesday"
    assert "start_time" in entry_out["field_errors"]
    assert entry_out["title"] == "still read"


def test_entries_any_name_and_through_links(registry: Registry, tmp_path: Path) -> None:
    other = tmp_path / "other.nxs"
    with h5py.File(other, "w") as f:
        entry = shapes.nx_group(f, "scan_0001", "NXentry")
        shapes.put_string(entry, "title", "from the other file", "vlen-str")
    path = tmp_path / "links.nxs"
    with h5py.File(path, "w") as f:
        real = shapes.nx_group(f, "measurement", "NXentry")
        shapes.put_string(real, "title", "real", "vlen-str")
        f["alias"] = h5py.SoftLink("/measurement")  # the same entry twice: counted once
        f["remote"] = h5py.ExternalLink("other.nxs", "/scan_0001")
        f["gone"] = h5py.ExternalLink("missing.nxs", "/entry")
        f.create_group("not_an_entry")
    result = extract(registry, path)
    assert [(e["name"], e["title"]) for e in result.entries] == [
        ("measurement", "real"),
        ("remote", "from the other file"),
    ]
    assert result.entries[1]["linked_from"] == str(other)
    files = {f["path"]: f["exists"] for f in result.metadata["links"]["files"]}
    assert files == {str(other): True, str(tmp_path / "missing.nxs"): False}
    assert result.metadata["links"]["missing"] == 1


def test_subentries_give_definitions(registry: Registry, tmp_path: Path) -> None:
    path = tmp_path / "tomo.nxs"
    with h5py.File(path, "w") as f:
        entry = shapes.nx_group(f, "entry1", "NXentry")
        sub = shapes.nx_group(entry, "tomo_entry", "NXsubentry")
        shapes.put_string(sub, "definition", "NXtomo", "fixed")
        shapes.put_string(sub, "title", "tomography", "fixed")
    entry_out = extract(registry, path).entries[0]
    assert entry_out["definition"] == "NXtomo"
    assert entry_out["definitions"] == ["NXtomo"]
    assert entry_out["subentries"] == [
        {"name": "tomo_entry", "definition": "NXtomo", "title": "tomography"}
    ]


# -- NXmx masters and data files -------------------------------------------------------------


def test_nxmx_master_with_external_links(registry: Registry, tmp_path: Path) -> None:
    written = shapes.write_nxmx(tmp_path, files=4, frames_per_file=5, missing=(4,))
    result = extract(registry, written["master"])
    assert result.ok and result.kind == "nexus"
    [entry] = result.entries
    assert entry["definition"] == "NXmx"
    assert entry["start_time"] == "2023-06-02T08:15:00+00:00"
    assert entry["duration"] == 30.0
    assert entry["instrument"]["name"] == "BioMAX"
    beam = entry["instrument"]["beam"]
    assert (beam["incident_wavelength"], beam["incident_wavelength_units"]) == (0.9795, "angstrom")
    [detector] = entry["instrument"]["detectors"]
    assert detector["description"] == "Dectris EIGER2 X 16M"
    assert detector["data_shape"] == [15, 32, 32]  # three of four files exist
    [data] = entry["data"]
    assert data["datasets"] == 4 and data["complete"] is False and data["unreachable"] == 1
    links = result.metadata["links"]
    assert [link["exists"] for link in links["external"]] == [True, True, True, False]
    assert links["external"][0]["target"] == "/entry/data/data"
    assert links["external"][0]["resolved"] == written["data_files"][0]
    assert result.metadata["role"] == "master"
    assert result.metadata["linked_files"] == written["data_files"]
    assert links["missing"] == 1


def test_data_files_point_to_their_master(registry: Registry, tmp_path: Path) -> None:
    written = shapes.write_nxmx(tmp_path, files=2)
    for data_file in written["data_files"]:
        result = extract(registry, data_file)
        assert result.ok
        assert result.metadata["role"] == "data"
        assert result.metadata["master"] == written["master"]


def test_data_file_without_a_linking_master(registry: Registry, tmp_path: Path) -> None:
    written = shapes.write_nxmx(tmp_path, files=1)
    Path(written["master"]).unlink()
    shapes.write_gda_scan(written["master"], entries=1)  # same name, links elsewhere
    result = extract(registry, written["data_files"][0])
    assert "master" not in result.metadata


def test_virtual_dataset_master(registry: Registry, tmp_path: Path) -> None:
    written = shapes.write_nxmx(tmp_path, "odin", files=3, frames_per_file=4, virtual=True)
    Path(written["data_files"][2]).unlink()
    result = extract(registry, written["master"])
    assert result.ok
    [virtual] = result.metadata["links"]["virtual"]
    assert virtual["path"] == "/entry/data/data"
    assert [s["exists"] for s in virtual["sources"]] == [True, True, False]
    assert virtual["sources"][0]["dataset"] == "/entry/data/data"
    assert result.metadata["structure"]["virtual"] == 1
    assert result.metadata["role"] == "master"
    assert result.entries[0]["data"][0]["shape"] == [12, 32, 32]
    data_result = extract(registry, written["data_files"][0])
    assert data_result.metadata["master"] == written["master"]


# -- links that lead out of the allowed files ----------------------------------------------
SECRET = "secret title of another proposal"


def write_outside(path: Path) -> None:
    """A file outside the link root, with values a crafted file tries to pull in."""
    with h5py.File(path, "w") as f:
        group = f.create_group("g")
        group["title"] = SECRET
        group["x"] = np.arange(3)
        inner = group.create_group("inner")
        inner["title"] = SECRET


def write_crafted(path: Path, outside: Path) -> None:
    """An NXentry whose title and sample name reach ``outside`` only through a soft
    link whose path runs through an external link, or a virtual dataset mapping it."""
    with h5py.File(path, "w") as f:
        f["ext"] = h5py.ExternalLink(str(outside), "/g")
        entry = f.create_group("entry")
        entry.attrs["NX_class"] = "NXentry"
        entry["title"] = h5py.SoftLink("/ext/title")
        entry["program_name"] = h5py.SoftLink("/entry/hop")
        entry["hop"] = h5py.SoftLink("/ext/inner/title")
        sample = entry.create_group("sample")
        sample.attrs["NX_class"] = "NXsample"
        layout = h5py.VirtualLayout(shape=(3,), dtype="i8")
        layout[:] = h5py.VirtualSource(str(outside), "/g/x", shape=(3,))
        sample.create_virtual_dataset("temperature", layout)


@pytest.mark.parametrize("follow", [False, True])
def test_no_link_chain_reads_a_file_outside_the_link_root(tmp_path: Path, follow: bool) -> None:
    """Soft links through external links are resolved one name at a time, so the
    external hop meets follow_external_links and link_root; virtual datasets' values
    are never read (HDF5 would open their sources itself)."""
    root = tmp_path / "data"
    root.mkdir()

    def crafted_towards(linked: Path, name: str) -> ExtractResult:
        write_outside(linked)
        write_crafted(root / name, linked)
        with make_registry(follow_external_links=follow, link_root=str(root)) as reg:
            return extract(reg, root / name)

    result = crafted_towards(tmp_path / "elsewhere.h5", "crafted.nxs")
    assert result.ok and result.kind == "nexus"
    assert SECRET not in json.dumps(result.to_json())
    [entry] = result.entries
    assert entry["title"] is None and entry["program_name"] is None
    assert entry["sample"]["temperature"] is None  # the outside file's [0, 1, 2]
    assert "virtual dataset" in entry["field_errors"]["sample.temperature"]
    # Inside the root, the same chain is followed when external links are.
    [entry] = crafted_towards(root / "linked.h5", "allowed.nxs").entries
    assert (entry.get("title") == SECRET) is follow
    assert (entry.get("program_name") == SECRET) is follow


def test_soft_link_cycles_and_long_chains_end(registry: Registry, tmp_path: Path) -> None:
    """Links are followed by the reader itself now: a cycle and a chain longer than
    HDF5's own limit of 16 give no value (and no endless walk), a short chain does."""
    path = tmp_path / "links.nxs"
    with h5py.File(path, "w") as f:
        entry = f.create_group("entry")
        entry.attrs["NX_class"] = "NXentry"
        entry["title"] = h5py.SoftLink("/entry/loop")
        entry["loop"] = h5py.SoftLink("/entry/title")
        entry["name"] = "the end of the chain"
        for i in range(40):
            entry[f"c{i}"] = h5py.SoftLink(f"/entry/c{i + 1}" if i < 39 else "/entry/name")
        entry["program_name"] = h5py.SoftLink("/entry/c0")  # 41 links
        entry["experiment_identifier"] = h5py.SoftLink("/entry/c35")  # 5 links
    result = extract(registry, path)
    [entry_out] = result.entries
    assert entry_out["title"] is None and entry_out["program_name"] is None
    assert entry_out["experiment_identifier"] == "the end of the chain"


# -- other writers ---------------------------------------------------------------------------


def test_nexusformat_written_file(registry: Registry, tmp_path: Path) -> None:
    path = tmp_path / "nf.nxs"
    shapes.write_nexusformat(path, title="powder run 7")
    result = extract(registry, path)
    assert result.ok and result.kind == "nexus"
    [entry] = result.entries
    assert entry["title"] == "powder run 7"
    assert entry["start_time"] == "2024-01-15T09:30:00"
    assert entry["end_time"] == "2024-01-15T09:40:00"
    assert entry["duration"] == 600.0
    assert entry["definition"] == "NXmonopd"
    assert entry["sample"]["name"] == "silicon"
    assert (entry["sample"]["temperature"], entry["sample"]["temperature_units"]) == (77.0, "K")


def test_area_detector_plain_hdf5(registry: Registry, tmp_path: Path) -> None:
    path = tmp_path / "ad_0001.h5"
    shapes.write_area_detector(path, frames=50)
    result = extract(registry, path)
    assert result.ok and result.kind == "hdf5" and result.entries == ()
    structure = result.metadata["structure"]
    assert structure["root_attributes"] == {"detector": "ADSim", "acquire_time": 0.05}
    by_path = {o["path"]: o for o in structure["objects"]}
    assert by_path["/data"] == {
        "path": "/data",
        "type": "dataset",
        "shape": [50, 512, 512],
        "dtype": "uint16",
    }
    assert structure["groups"] == 2 and structure["datasets"] == 3


def test_hdf5_indexer_alone(tmp_path: Path) -> None:
    path = tmp_path / "scan.nxs"
    shapes.write_gda_scan(path, entries=1)
    with Registry([Hdf5Indexer()], settings=IndexerSettings(isolation="inline")) as reg:
        result = extract(reg, path)
    assert result.kind == "hdf5" and result.entries == () and result.indexer == "hdf5"


def test_user_block(registry: Registry, tmp_path: Path) -> None:
    path = tmp_path / "ub.nxs"
    shapes.write_with_userblock(path, userblock=2048)
    result = extract(registry, path)
    assert result.ok and result.entries[0]["title"] == "behind a user block"
    assert result.metadata["structure"]["userblock_size"] == 2048


def test_structure_summary_is_bounded(tmp_path: Path) -> None:
    path = tmp_path / "wide.h5"
    with h5py.File(path, "w") as f:
        for i in range(300):
            f.create_dataset(f"d{i:03d}", data=i)
    with make_registry(max_summary_objects=10, max_objects=100) as reg:
        result = extract(reg, path)
    structure = result.metadata["structure"]
    assert len(structure["objects"]) == 10
    assert structure["truncated"] is True
    assert any("stopped" in w for w in result.metadata["warnings"])


def test_soft_link_cycles(registry: Registry, tmp_path: Path) -> None:
    path = tmp_path / "cycle.nxs"
    with h5py.File(path, "w") as f:
        entry = shapes.nx_group(f, "entry", "NXentry")
        shapes.put_string(entry, "title", "cycles", "vlen-str")
        entry["loop"] = h5py.SoftLink("/entry")
        entry["a"] = h5py.SoftLink("/entry/b")
        entry["b"] = h5py.SoftLink("/entry/a")
        entry["dangling"] = h5py.SoftLink("/nowhere")
        group = entry.create_group("g")
        group["parent"] = entry  # a hard-link cycle
    result = extract(registry, path)
    assert result.ok and result.entries[0]["title"] == "cycles"
    assert result.metadata["structure"]["soft_links"] == 4


# -- site mappings ---------------------------------------------------------------------------


def test_site_mapping(tmp_path: Path) -> None:
    path = tmp_path / "scan.nxs"
    shapes.write_gda_scan(path, entries=2)
    with h5py.File(path, "a") as f:
        f["entry1/sample/temperature"][...] = 22.0
        f["entry1/sample/temperature"].attrs["units"] = "degC"
        f["entry1/sample"].create_dataset("humidity", data=np.array([1.0, 2.0]))
    mappings = [
        {"field": "scan_command", "paths": ["scan_command"]},
        {"field": "ring_current", "paths": ["/NXentry/NXcollection/ring_current"], "type": "float"},
        {
            "field": "sample.temperature",
            "paths": ["NXsample/temperature"],
            "type": "float",
            "units": "K",
        },
        {"field": "sample.humidity", "paths": ["NXsample/humidity"], "type": "float"},
        {"field": "source_name", "paths": ["/NXentry/NXinstrument/NXsource/name"]},
        {"field": "energy_ev", "paths": ["*/monochromator/energy"], "type": "float", "units": "eV"},
        {
            "field": "bad_units",
            "paths": ["NXinstrument/NXmonochromator/energy"],
            "type": "float",
            "units": "K",
        },
        {"field": "only_entry2", "paths": ["/entry2/title"]},
        {"field": "first_found", "paths": ["no/such/thing", "instrument/name"]},
        {"field": "frames", "paths": ["NXinstrument/NXdetector/data"], "type": "shape"},
        {"field": "file_name", "paths": ["/@file_name"], "scope": "file"},
        {"field": "entry_count_title", "paths": ["/entry2/title"], "scope": "file"},
    ]
    settings = {"mappings": [FieldMapping.model_validate(m) for m in mappings]}
    with make_registry(**settings) as reg:
        result = extract(reg, path)
    first, second = result.entries
    assert first["scan_command"] == "scan x 1 10 1 pilatus 0.1 # 1"
    assert first["ring_current"] == 299.8 and first["ring_current_units"] == "mA"
    assert first["sample"]["temperature"] == pytest.approx(295.15)
    assert first["sample"]["temperature_units"] == "K"
    assert first["sample"]["humidity"] is None  # fails alone, with its reason
    assert "array of 2 values" in first["field_errors"]["sample.humidity"]
    assert first["source_name"] == "Diamond Light Source"
    assert first["energy_ev"] == pytest.approx(12400.0)
    assert first["bad_units"] is None and "cannot convert" in first["field_errors"]["bad_units"]
    assert first["only_entry2"] is None and second["only_entry2"] == "i22 scan 12345 part 2"
    assert first["first_found"] == "i22"
    assert first["frames"] == [10, 195, 487]
    assert first["title"] == "i22 scan 12345 part 1"  # defaults still there
    assert second["sample"]["temperature"] == 295.0
    assert result.metadata["fields"] == {
        "file_name": str(path),
        "entry_count_title": "i22 scan 12345 part 2",
    }


def test_defaults_can_be_replaced_or_dropped(tmp_path: Path) -> None:
    path = tmp_path / "scan.nxs"
    shapes.write_gda_scan(path, entries=1)
    title = FieldMapping(field="title", paths=("scan_command",))
    with make_registry(mappings=(title,)) as reg:
        assert extract(reg, path).entries[0]["title"].startswith("scan x")
    with make_registry(use_default_mappings=False) as reg:
        entry = extract(reg, path).entries[0]
    assert entry["title"] is None and "name" not in entry["instrument"]
    assert entry["sample"]["name"] == "lysozyme 1"  # the sample's scalars are always read
    assert entry["users"][0]["name"] == "Ada Lovelace"


def test_settings_from_toml_shape() -> None:
    import tomllib

    text = """
    max_array_bytes = 1024
    keep_emails = true
    [[mappings]]
    field = "sample.pressure"
    paths = ["NXsample/pressure"]
    type = "float"
    units = "Pa"
    """
    settings = IndexerSettings.model_validate(tomllib.loads(text))
    assert settings.mappings[0].units == "Pa" and settings.keep_emails
    with pytest.raises(ValueError):
        IndexerSettings.model_validate({"no_such_key": 1})


def test_text_attributes_read_alike_in_every_string_form(tmp_path: Path) -> None:
    """Reader.text_attr reads one variable-length string without its dataspace: the
    text must still be what h5py's attrs give, for one string and for several."""
    from indexers.base import Deadline
    from indexers.normalise import to_text
    from indexers.reader import Reader

    path = tmp_path / "strings.h5"
    forms: dict[str, Any] = {
        "vlen_scalar": ("NXentry", h5py.string_dtype()),
        "vlen_one": (["NXentry"], h5py.string_dtype()),
        "vlen_two": (["NXentry", "NXsubentry"], h5py.string_dtype()),
        "vlen_ascii": ("NXentry", h5py.string_dtype("ascii")),
        "vlen_long": ("x" * 40, h5py.string_dtype()),
        "fixed_scalar": (np.bytes_("NXentry"), None),
        "fixed_two": (np.array([b"NXentry", b"NXdata"]), None),
        "empty_vlen": (["", ""], h5py.string_dtype()),
    }
    with h5py.File(path, "w") as f:
        for name, (value, dtype) in forms.items():
            f.attrs.create(name, value, dtype=dtype)
        expected = {name: to_text(f.attrs[name]) for name in forms}
    assert expected["vlen_two"] == to_text(["NXentry", "NXsubentry"])
    with Reader(str(path), IndexerSettings(), Deadline(10)) as reader:
        got = {name: reader.text_attr(reader.root, name) for name in forms}
        assert reader.text_attr(reader.root, "absent") is None
    assert got == expected
