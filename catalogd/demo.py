"""A realistic ``/data``-shaped demo tree, for trying catalogd out and for tests.

Three user types, several beamlines, proposals and visits, ``raw`` and ``process``
areas, NeXus files with entries, samples, instruments and users (one an NXmx master
with external links to its detector data files), and some files that are not HDF5.
Modes follow the seed's policy, except for a few deliberate violations listed in
:data:`PLANTED_VIOLATIONS` so ``catalogd audit`` has something to report.
"""

from __future__ import annotations

import datetime as dt
import os
import random
from dataclasses import dataclass
from pathlib import Path

import h5py
import numpy as np

#: (user type, beamline, proposal, [visits]) in the demo tree.
PROPOSALS: tuple[tuple[str, str, str, tuple[str, ...]], ...] = (
    ("visitor", "biomax", "20170251", ("2017112208", "2018020108")),
    ("visitor", "biomax", "20180101", ("2018031508",)),
    ("visitor", "nanomax", "20170077", ("2017101608",)),
    ("staff", "balder", "20190002", ("2019050608",)),
    ("proprietary", "biomax", "20189001", ("2018120308",)),
)
SAMPLES = (
    ("lysozyme", "C613H959N193O185S10"),
    ("thaumatin", "C1002H1522N278O304S17"),
    ("gold nanoparticles", "Au"),
    ("silicon wafer", "Si"),
    ("zeolite ZSM-5", "NaAlSi3O8"),
)
SOURCE = {"name": "MAX IV 3 GeV ring", "type": "Synchrotron X-ray Source", "probe": "x-ray"}
#: Paths (relative to the demo root) whose mode breaks the policy on purpose.
PLANTED_VIOLATIONS = (
    "visitor/nanomax/20170077/2017101608/process/notes.txt",  # world-readable
    "visitor/biomax/20180101",  # proposal directory open to others
)

DIR_MODES = {"user_type": 0o2755, "beamline": 0o2775, "proposal": 0o2750, "visit": 0o2770}
FILE_MODE = 0o0640


@dataclass(frozen=True)
class DemoTree:
    root: Path
    files: int
    nexus_files: int


def _set_attr_text(obj: h5py.HLObject, name: str, value: str) -> None:
    obj.attrs[name] = value


def _text(group: h5py.Group, name: str, value: str) -> h5py.Dataset:
    return group.create_dataset(name, data=value)


def _nx_group(parent: h5py.Group, name: str, nx_class: str) -> h5py.Group:
    group = parent.create_group(name)
    _set_attr_text(group, "NX_class", nx_class)
    return group


def _write_entry(
    f: h5py.File,
    *,
    name: str,
    title: str,
    start: dt.datetime,
    minutes: int,
    proposal: str,
    beamline: str,
    sample: tuple[str, str],
    definition: str,
    rng: random.Random,
) -> h5py.Group:
    entry = _nx_group(f, name, "NXentry")
    _text(entry, "title", title)
    _text(entry, "start_time", start.isoformat())
    _text(entry, "end_time", (start + dt.timedelta(minutes=minutes)).isoformat())
    _text(entry, "definition", definition)
    _text(entry, "experiment_identifier", proposal)
    program = _text(entry, "program_name", "MXCuBE" if beamline == "biomax" else "Sardana")
    _set_attr_text(program, "version", "3.2.1")
    smp = _nx_group(entry, "sample", "NXsample")
    _text(smp, "name", sample[0])
    _text(smp, "chemical_formula", sample[1])
    temp = smp.create_dataset("temperature", data=round(rng.uniform(90, 300), 1))
    _set_attr_text(temp, "units", "K")
    inst = _nx_group(entry, "instrument", "NXinstrument")
    _text(inst, "name", beamline.upper())
    src = _nx_group(inst, "source", "NXsource")
    for key, value in SOURCE.items():
        _text(src, key, value)
    energy = src.create_dataset("energy", data=3.0)
    _set_attr_text(energy, "units", "GeV")
    mono = _nx_group(inst, "monochromator", "NXmonochromator")
    mono_energy = mono.create_dataset("energy", data=round(rng.uniform(6, 20), 3))
    _set_attr_text(mono_energy, "units", "keV")
    user = _nx_group(entry, "user", "NXuser")
    _text(user, "name", rng.choice(["Ada Lovelace", "Rosalind Franklin", "Dorothy Hodgkin"]))
    _text(user, "role", "principal_investigator")
    _text(user, "affiliation", rng.choice(["Lund University", "KTH", "Uppsala University"]))
    return entry


def _detector(entry: h5py.Group, rng: random.Random) -> h5py.Group:
    det = _nx_group(entry["instrument"], "detector", "NXdetector")
    det.create_dataset(
        "data",
        data=np.asarray(
            [[[rng.randrange(200) for _ in range(16)] for _ in range(16)] for _ in range(4)],
            dtype=np.uint16,
        ),
        chunks=True,
    )
    return det


def write_scan(
    path: Path, *, visit: str, proposal: str, beamline: str, index: int, rng: random.Random
) -> None:
    """One NeXus scan file with one or two entries."""
    start = dt.datetime.strptime(visit[:8], "%Y%m%d").replace(
        hour=8, tzinfo=dt.timezone(dt.timedelta(hours=1))
    ) + dt.timedelta(minutes=37 * index)
    sample = rng.choice(SAMPLES)
    with h5py.File(path, "w") as f:
        _set_attr_text(f, "default", "entry")
        for n in range(1 + index % 2):
            entry = _write_entry(
                f,
                name="entry" if n == 0 else f"entry{n + 1}",
                title=f"{sample[0]} {rng.choice(['energy scan', 'mesh scan', 'xrf map'])} {index}",
                start=start + dt.timedelta(minutes=15 * n),
                minutes=12,
                proposal=proposal,
                beamline=beamline,
                sample=sample,
                definition="NXxas" if beamline == "balder" else "NXscan",
                rng=rng,
            )
            _detector(entry, rng)


def write_nxmx_master(
    directory: Path,
    *,
    visit: str,
    proposal: str,
    index: int,
    rng: random.Random,
    data_files: int = 2,
) -> list[Path]:
    """An NXmx master file linking to detector data files (as Eiger detectors write)."""
    stem = f"lysozyme_{index}"
    written: list[Path] = []
    for n in range(1, data_files + 1):
        data_path = directory / f"{stem}_data_{n:06d}.h5"
        with h5py.File(data_path, "w") as f:
            entry = _nx_group(f, "entry", "NXentry")
            data = _nx_group(entry, "data", "NXdata")
            data.create_dataset("data", data=np.zeros((2, 32, 32), dtype=np.uint32))
        written.append(data_path)
    master = directory / f"{stem}_master.h5"
    start = dt.datetime.strptime(visit[:8], "%Y%m%d").replace(hour=9, tzinfo=dt.UTC)
    with h5py.File(master, "w") as f:
        entry = _write_entry(
            f,
            name="entry",
            title=f"lysozyme rotation {index}",
            start=start,
            minutes=3,
            proposal=proposal,
            beamline="biomax",
            sample=SAMPLES[0],
            definition="NXmx",
            rng=rng,
        )
        data = _nx_group(entry, "data", "NXdata")
        for n, data_path in enumerate(written, start=1):
            data[f"data_{n:06d}"] = h5py.ExternalLink(data_path.name, "/entry/data/data")
    written.append(master)
    return written


def build_demo_tree(root: Path, *, seed: int = 2017, scans_per_visit: int = 3) -> DemoTree:
    """Write the demo tree under ``root`` (created; must be empty or absent)."""
    rng = random.Random(seed)
    root.mkdir(parents=True, exist_ok=True)
    if any(root.iterdir()):
        raise FileExistsError(f"{root} is not empty")
    files = nexus = 0
    for user_type, beamline, proposal, visits in PROPOSALS:
        levels = [
            root / user_type,
            root / user_type / beamline,
            root / user_type / beamline / proposal,
        ]
        for level, directory in zip(("user_type", "beamline", "proposal"), levels, strict=True):
            directory.mkdir(exist_ok=True)
            os.chmod(directory, DIR_MODES[level])
        for visit in visits:
            visit_dir = levels[-1] / visit
            for sub in (visit_dir, visit_dir / "raw", visit_dir / "process"):
                sub.mkdir()
                os.chmod(sub, DIR_MODES["visit"])
            raw, process = visit_dir / "raw", visit_dir / "process"
            for index in range(1, scans_per_visit + 1):
                write_scan(
                    raw / f"scan_{index:04d}.nxs",
                    visit=visit,
                    proposal=proposal,
                    beamline=beamline,
                    index=index,
                    rng=rng,
                )
                files += 1
                nexus += 1
            if beamline == "biomax":
                written = write_nxmx_master(raw, visit=visit, proposal=proposal, index=1, rng=rng)
                files += len(written)
                nexus += 1
            (process / "notes.txt").write_text(
                f"Processing notes for proposal {proposal}, visit {visit}.\n", encoding="utf-8"
            )
            (process / "integrate.log").write_text("XDS integrate: 1234 reflections\n")
            files += 2
    for path in root.rglob("*"):
        if path.is_file():
            os.chmod(path, FILE_MODE)
    for rel in PLANTED_VIOLATIONS:
        target = root / rel
        if target.exists():
            os.chmod(target, (0o2755 if target.is_dir() else 0o644))
    return DemoTree(root=root, files=files, nexus_files=nexus)
