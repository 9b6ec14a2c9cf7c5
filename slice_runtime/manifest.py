"""DIR/manifest.json as the data plane reads it: the slices, their tensors and their order.

Keys read here: `model` (name, sha256), `inputs`/`outputs` (the whole model's tensor
specs), `slices` (in an order that runs; each `id`, `file`, `sha256`, `inputs`,
`outputs`, `depends_on`, and `group` for a sub-slice) and `joins` (model outputs
computed in parts, and the axis to concatenate them along).
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from .errors import ManifestError
from .tensors import TensorSpec

FORMAT = "mopar.manifest/v1"


@dataclass(frozen=True)
class SliceEntry:
    id: str
    file: str
    sha256: str
    inputs: list[TensorSpec]
    outputs: list[TensorSpec]
    depends_on: list[str]
    group: str | None = None
    codecs: Mapping[str, str] = field(default_factory=dict)
    memory_mb: int | None = None
    data_file: str | None = None  # weights kept beside the file (slices over 2 GB)
    data_sha256: str | None = None

    @property
    def group_id(self) -> str:
        return self.group or self.id


@dataclass(frozen=True)
class Join:
    axis: int
    parts: list[str]


@dataclass(frozen=True)
class Manifest:
    directory: Path
    name: str
    sha256: str
    inputs: list[TensorSpec]
    outputs: list[TensorSpec]
    slices: list[SliceEntry]
    joins: Mapping[str, Join]
    input_ranges: Mapping[str, tuple[int, int]]
    raw: Mapping[str, Any]

    def path_of(self, entry: SliceEntry) -> Path:
        return self.directory / entry.file

    def stages(self) -> list[list[SliceEntry]]:
        """Slices grouped into stages that run one after another; the slices of one
        stage (the sub-slices of a split slice) run in parallel."""
        stages: list[list[SliceEntry]] = []
        for entry in self.slices:
            if stages and entry.group is not None and stages[-1][0].group == entry.group:
                stages[-1].append(entry)
            else:
                stages.append([entry])
        return stages

    def verify_files(self) -> None:
        """Check every slice file against its sha256 (a truncated copy must not be served)."""
        for entry in self.slices:
            files = [(entry.file, entry.sha256)]
            if entry.data_file:
                files.append((entry.data_file, entry.data_sha256 or ""))
            for name, digest in files:
                path = self.directory / name
                if not path.exists():
                    raise ManifestError(f"{path}: slice file missing")
                if sha256_file(path) != digest:
                    raise ManifestError(f"{path}: sha256 does not match the manifest")

    def output_tensors(self) -> list[str]:
        """Stored tensors that make up the model's outputs (the parts of a joined output)."""
        return [
            p
            for spec in self.outputs
            for p in (self.joins[spec.name].parts if spec.name in self.joins else [spec.name])
        ]

    def join_outputs(self, tensors: Mapping[str, np.ndarray]) -> dict[str, np.ndarray]:
        """The model's outputs from the slices' tensors, concatenating outputs made in parts."""
        result = {}
        for spec in self.outputs:
            if spec.name in self.joins:
                join = self.joins[spec.name]
                result[spec.name] = np.concatenate([tensors[p] for p in join.parts], axis=join.axis)
            else:
                result[spec.name] = tensors[spec.name]
        return result


def load(directory: str | Path) -> Manifest:
    directory = Path(directory)
    path = directory / "manifest.json" if directory.is_dir() else directory
    if not path.exists():
        raise ManifestError(f"{path}: no such file (expected a directory written by `mopar slice`)")
    try:
        data = json.loads(path.read_text())
    except json.JSONDecodeError as error:
        raise ManifestError(f"{path}: not JSON ({error})") from None
    if not isinstance(data, dict) or data.get("format") != FORMAT:
        raise ManifestError(f"{path}: not a mopar manifest (expected format {FORMAT!r})")
    try:
        return Manifest(
            directory=path.parent,
            name=str(data["model"]["name"]),
            sha256=str(data["model"]["sha256"]),
            inputs=[TensorSpec.from_json(s) for s in data["inputs"]],
            outputs=[TensorSpec.from_json(s) for s in data["outputs"]],
            slices=[
                SliceEntry(
                    id=str(s["id"]),
                    file=str(s["file"]),
                    sha256=str(s["sha256"]),
                    inputs=[TensorSpec.from_json(t) for t in s["inputs"]],
                    outputs=[TensorSpec.from_json(t) for t in s["outputs"]],
                    depends_on=list(s.get("depends_on", [])),
                    group=s.get("group"),
                    codecs=dict(s.get("codecs", {})),
                    memory_mb=s.get("memory_mb"),
                    data_file=s.get("data_file"),
                    data_sha256=s.get("data_sha256"),
                )
                for s in data["slices"]
            ],
            joins={t: Join(int(j["axis"]), list(j["parts"])) for t, j in data.get("joins", {}).items()},
            input_ranges={k: (int(v[0]), int(v[1])) for k, v in data.get("input_ranges", {}).items()},
            raw=data,
        )
    except (KeyError, TypeError, ValueError) as error:
        raise ManifestError(f"{path}: malformed manifest ({error!r})") from None


def run_in_process(
    manifest: Manifest,
    feeds: Mapping[str, np.ndarray],
    run_slice: Callable[[SliceEntry, dict[str, np.ndarray]], dict[str, np.ndarray]],
) -> dict[str, np.ndarray]:
    """Run the slices in manifest order, each fed the tensors named in its inputs; return
    the model's outputs. `run_slice(entry, inputs) -> outputs` runs one slice."""
    tensors: dict[str, np.ndarray] = dict(feeds)
    for entry in manifest.slices:
        tensors.update(run_slice(entry, {spec.name: tensors[spec.name] for spec in entry.inputs}))
    return manifest.join_outputs(tensors)


def sha256_file(path: Path) -> str:
    digest = hashlib.sha256()
    with path.open("rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            digest.update(chunk)
    return digest.hexdigest()
