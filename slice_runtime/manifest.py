"""DIR/manifest.json, read and written here only: the slices, their tensors and their order.

Keys: `format`, `model` (name, sha256, file), `inputs`/`outputs` (the whole model's tensor
specs), `input_ranges`, `slices` (in an order that runs; each `id`, `file`, `sha256`,
`inputs`, `outputs`, `depends_on`, `memory_mb`, `cpu` (vCPUs its function requests), `threads`
(its sessions' intra-op threads), `codecs`, `prepack`, and `group` for a sub-slice,
`data_file`/`data_sha256` for weights kept beside the file), `joins` (model outputs computed
in parts, and the axis to concatenate them along), `max_batch_size` (for a model with a
symbolic batch: the largest batch a request may carry; the inputs' leading dimension is -1)
and `plan` (the plan.json it was cut by, kept whole for the tools that report on it).

This module also owns the names inside a manifest: slice ids (`s0`, `s1`, ...), sub-slice
ids (`s1.0`, `s1.1`, ...) and the tensors a sub-slice writes (`NAME__part0`, ...).

A manifest is checked when it is read (`validate`: ids unique and plain, files named
inside the directory, each slice depending on earlier slices only and on the ones that
write its inputs, so the order runs and cannot cycle) and its files before they are served
(`verify_files`: inside the directory after symlinks, sha256, and the inputs and outputs
each ONNX file declares against its entry).
"""

from __future__ import annotations

import hashlib
import json
import re
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path, PurePosixPath
from typing import Any

import numpy as np

from slice_runtime import onnxio
from slice_runtime.errors import ManifestError
from slice_runtime.tensors import TensorSpec

FORMAT = "mopar.manifest/v1"
FILE_NAME = "manifest.json"
_PART = "__part"
# Slice ids end up in file, log, key and Kubernetes object names: letters, digits, '.', '-', '_'.
_SLICE_ID = re.compile(r"[A-Za-z0-9][A-Za-z0-9._-]{0,62}")
_SHA256 = re.compile(r"[0-9a-f]{64}")


def slice_id(index: int) -> str:
    """The id of the plan's slice number `index` (0-based)."""
    return f"s{index}"


def subslice_id(group: str, part: int) -> str:
    """The id of sub-slice `part` of split slice `group`."""
    return f"{group}.{part}"


def part_tensor(tensor: str, part: int) -> str:
    """The tensor sub-slice `part` writes: its share of `tensor`."""
    return f"{tensor}{_PART}{part}"


def whole_tensor(name: str) -> str:
    """The tensor a part (`part_tensor`) is a share of; `name` itself when it is no part."""
    return name.split(_PART)[0]


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
    prepack: bool = True  # whether its session pre-packs weights (`sessions.open_serving_session`)
    cpu: float | None = None  # vCPUs the plan gives its function (None: a manifest of before CPU was planned)
    threads: int = 1  # intra-op threads its sessions run with: the vCPUs rounded up

    def files(self) -> list[tuple[str, str]]:
        """(file name, sha256) of the slice file and, when it has one, its weights file."""
        files = [(self.file, self.sha256)]
        if self.data_file:
            files.append((self.data_file, self.data_sha256 or ""))
        return files

    def to_json(self) -> dict[str, Any]:
        data: dict[str, Any] = {"id": self.id, "file": self.file}
        if self.data_file:
            data["data_file"] = self.data_file
            data["data_sha256"] = self.data_sha256
        data["sha256"] = self.sha256
        if self.group is not None:
            data["group"] = self.group
        data["inputs"] = [s.to_json() for s in self.inputs]
        data["outputs"] = [s.to_json() for s in self.outputs]
        data["depends_on"] = list(self.depends_on)
        data["memory_mb"] = self.memory_mb
        data["cpu"] = self.cpu
        data["threads"] = self.threads
        data["codecs"] = dict(self.codecs)
        data["prepack"] = self.prepack
        return data

    @classmethod
    def from_json(cls, s: Mapping[str, Any]) -> SliceEntry:
        return cls(
            id=str(s["id"]),
            file=str(s["file"]),
            sha256=str(s["sha256"]),
            inputs=[TensorSpec.from_json(t) for t in s["inputs"]],
            outputs=[TensorSpec.from_json(t) for t in s["outputs"]],
            depends_on=[str(d) for d in s.get("depends_on", [])],
            group=s.get("group"),
            codecs=dict(s.get("codecs", {})),
            memory_mb=None if s.get("memory_mb") is None else int(s["memory_mb"]),
            data_file=s.get("data_file"),
            data_sha256=s.get("data_sha256"),
            prepack=bool(s.get("prepack", True)),
            cpu=None if s.get("cpu") is None else float(s["cpu"]),
            threads=int(s.get("threads", 1)),
        )


@dataclass(frozen=True)
class Join:
    axis: int
    parts: list[str]


@dataclass(frozen=True)
class Manifest:
    name: str
    sha256: str
    inputs: list[TensorSpec]
    outputs: list[TensorSpec]
    slices: list[SliceEntry]
    joins: Mapping[str, Join] = field(default_factory=dict)
    input_ranges: Mapping[str, tuple[int, int]] = field(default_factory=dict)
    plan: Mapping[str, Any] = field(default_factory=dict)
    model_file: str | None = None
    directory: Path = Path(".")
    max_batch_size: int | None = None  # None: the model's shapes are fixed, batch included

    @property
    def batch_inputs(self) -> list[str]:
        """The inputs whose leading dimension is the batch (none for a fixed-batch model)."""
        if self.max_batch_size is None:
            return []
        return [s.name for s in self.inputs if s.shape and s.shape[0] == -1]

    def path_of(self, entry: SliceEntry) -> Path:
        return self.directory / entry.file

    def digests(self) -> set[str]:
        """The sha256 of every file of every slice (what the artifact store holds for this model)."""
        return {digest for entry in self.slices for _, digest in entry.files() if digest}

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

    def validate(self, where: str = "manifest") -> None:
        """ManifestError naming the first thing that makes this manifest unservable."""
        seen: dict[str, SliceEntry] = {}
        producers = {spec.name: "the model's inputs" for spec in self.inputs}
        for entry in self.slices:
            if not _SLICE_ID.fullmatch(entry.id) or ".." in entry.id:
                raise ManifestError(f"{where}: slice id {entry.id[:80]!r} is not 1-63 letters, digits, '.', '-', '_'")
            if entry.id in seen:
                raise ManifestError(f"{where}: two slices have the id {entry.id!r}")
            if entry.threads < 1 or (entry.cpu is not None and not entry.cpu > 0):
                raise ManifestError(
                    f"{where}: slice {entry.id} needs threads of at least 1 and cpu above 0, "
                    f"got threads {entry.threads} and cpu {entry.cpu}"
                )
            for name, _ in entry.files():
                _check_relative(name, f"{where}: slice {entry.id}")
            for dependency in entry.depends_on:
                if dependency not in seen:
                    raise ManifestError(
                        f"{where}: slice {entry.id} depends on {dependency[:80]!r}, which is not a slice before it"
                    )
            for spec in entry.inputs:
                producer = producers.get(spec.name)
                if producer is None:
                    raise ManifestError(
                        f"{where}: slice {entry.id} reads {spec.name!r}, which no slice before it writes"
                    )
                if producer in seen and producer not in entry.depends_on:
                    raise ManifestError(
                        f"{where}: slice {entry.id} reads {spec.name!r} from slice {producer} but does not depend on it"
                    )
            for spec in entry.outputs:
                if spec.name in producers:
                    raise ManifestError(f"{where}: tensor {spec.name!r} is written twice (by slice {entry.id})")
                producers[spec.name] = entry.id
            seen[entry.id] = entry
        for tensor in self.output_tensors():
            if tensor not in producers:
                raise ManifestError(f"{where}: model output {tensor!r} is written by no slice")
        if self.max_batch_size is not None and (self.max_batch_size < 1 or not self.batch_inputs):
            raise ManifestError(f"{where}: max_batch_size {self.max_batch_size} needs inputs of a variable batch")

    def confined(self, name: str) -> Path:
        """DIR/name, refused if it leads outside DIR (through `..`, an absolute path or a symlink)."""
        _check_relative(name, str(self.directory))
        root = self.directory.resolve()
        path = (root / name).resolve()
        if not path.is_relative_to(root):
            raise ManifestError(f"{self.directory / name}: leads outside the slice directory {root}")
        return path

    def verify_files(self, entries: Sequence[SliceEntry] | None = None) -> None:
        """Check each slice's files: inside the directory, present, matching their sha256 (a
        truncated or swapped copy must not be served) and declaring the entry's tensors."""
        for entry in self.slices if entries is None else entries:
            for name, digest in entry.files():
                path = self.confined(name)
                if not path.is_file():
                    raise ManifestError(f"{self.directory / name}: slice file missing")
                if sha256_file(path) != digest:
                    raise ManifestError(f"{self.directory / name}: sha256 does not match the manifest")
            self.check_graph(entry, self.confined(entry.file))

    def check_graph(self, entry: SliceEntry, path: Path) -> None:
        """The inputs and outputs the ONNX file at `path` declares, against slice `entry`'s."""
        try:
            declared = onnxio.graph_io(path)
        except onnxio.NotOnnx as error:
            raise ManifestError(f"slice {entry.id}: {error}") from None
        for what, want, got in (
            ("inputs", entry.inputs, declared.inputs),
            ("outputs", entry.outputs, declared.outputs),
        ):
            problem = _mismatch(want, got)
            if problem:
                raise ManifestError(f"{path}: its {what} are not slice {entry.id}'s: {problem}")

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

    def to_json(self) -> dict[str, Any]:
        model: dict[str, Any] = {"name": self.name, "sha256": self.sha256}
        if self.model_file:
            model["file"] = self.model_file
        data: dict[str, Any] = {
            "format": FORMAT,
            "model": model,
            "inputs": [s.to_json() for s in self.inputs],
            "outputs": [s.to_json() for s in self.outputs],
            "input_ranges": {k: list(v) for k, v in self.input_ranges.items()},
            "slices": [e.to_json() for e in self.slices],
            "joins": {t: {"axis": j.axis, "parts": list(j.parts)} for t, j in self.joins.items()},
        }
        if self.max_batch_size is not None:
            data["max_batch_size"] = self.max_batch_size
        data["plan"] = dict(self.plan)
        return data

    def dumps(self, compact: bool = False) -> str:
        if compact:
            return json.dumps(self.to_json(), separators=(",", ":"))
        return json.dumps(self.to_json(), indent=1) + "\n"

    def save(self, directory: str | Path) -> Path:
        """Write DIR/manifest.json; returns its path."""
        path = Path(directory) / FILE_NAME
        path.write_text(self.dumps())
        return path


def _check_relative(name: str, where: str) -> None:
    path = PurePosixPath(name)
    if not name or path.is_absolute() or ".." in path.parts or "\\" in name or "\x00" in name:
        raise ManifestError(f"{where}: file {name[:120]!r} must be a relative path inside the slice directory")


def _mismatch(want: Sequence[TensorSpec], got: Sequence[TensorSpec]) -> str | None:
    """Why tensors `got` (a file's) are not `want` (an entry's), or None; -1 matches any size."""
    declared = {s.name: s for s in got}
    if set(declared) != {s.name for s in want}:
        return f"the file has {', '.join(declared) or 'none'}, the manifest {', '.join(s.name for s in want) or 'none'}"
    for spec in want:
        other = declared[spec.name]
        if other.dtype != spec.dtype:
            return f"{spec.name!r} is {other.dtype} in the file, {spec.dtype} in the manifest"
        if len(other.shape) != len(spec.shape) or any(
            a >= 0 and b >= 0 and a != b for a, b in zip(other.shape, spec.shape)
        ):
            return f"{spec.name!r} has shape {list(other.shape)} in the file, {list(spec.shape)} in the manifest"
    return None


def parse(data: Any, directory: str | Path = ".", where: str = "manifest") -> Manifest:
    """The manifest in `data` (decoded JSON), validated; ManifestError naming `where` if it is not one."""
    if not isinstance(data, dict) or data.get("format") != FORMAT:
        raise ManifestError(f"{where}: not a mopar manifest (expected format {FORMAT!r})")
    try:
        manifest = Manifest(
            name=str(data["model"]["name"]),
            sha256=str(data["model"]["sha256"]),
            model_file=data["model"].get("file"),
            inputs=[TensorSpec.from_json(s) for s in data["inputs"]],
            outputs=[TensorSpec.from_json(s) for s in data["outputs"]],
            slices=[SliceEntry.from_json(s) for s in data["slices"]],
            joins={t: Join(int(j["axis"]), [str(p) for p in j["parts"]]) for t, j in data.get("joins", {}).items()},
            input_ranges={k: (int(v[0]), int(v[1])) for k, v in data.get("input_ranges", {}).items()},
            plan=dict(data.get("plan") or {}),
            directory=Path(directory),
            max_batch_size=None if data.get("max_batch_size") is None else int(data["max_batch_size"]),
        )
    except (KeyError, TypeError, ValueError, AttributeError) as error:
        raise ManifestError(f"{where}: malformed manifest ({error!r})") from None
    manifest.validate(where)
    return manifest


def loads(text: str | bytes, where: str = "manifest") -> Manifest:
    """The manifest in JSON `text` (a ConfigMap's, the artifact store's)."""
    try:
        data = json.loads(text)
    except (json.JSONDecodeError, UnicodeDecodeError) as error:
        raise ManifestError(f"{where}: not JSON ({error})") from None
    return parse(data, where=where)


def load(directory: str | Path) -> Manifest:
    """DIR/manifest.json (or the manifest file given itself)."""
    directory = Path(directory)
    path = directory / FILE_NAME if directory.is_dir() else directory
    if not path.exists():
        raise ManifestError(f"{path}: no such file (expected a directory written by `mopar slice`)")
    try:
        data = json.loads(path.read_text())
    except (json.JSONDecodeError, UnicodeDecodeError) as error:
        if _looks_onnx(path):
            raise ManifestError(
                f"{path} is an ONNX model, not a slice directory: give the directory `mopar slice` writes "
                f"(mopar plan MODEL -o plan.json; mopar slice MODEL --plan plan.json -o DIR)"
            ) from None
        raise ManifestError(f"{path}: not JSON ({error})") from None
    return parse(data, path.parent, str(path))


def _looks_onnx(path: Path) -> bool:
    """Named .onnx, or starting as a serialized ModelProto does (field 1, ir_version, a varint)."""
    with path.open("rb") as f:
        return path.suffix.lower() == ".onnx" or f.read(1) == b"\x08"


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


def depends_on(inputs: Sequence[TensorSpec], producers: Mapping[str, str]) -> list[str]:
    """The ids of the slices that write any of `inputs` (`producers`: tensor -> slice id)."""
    return sorted({producers[s.name] for s in inputs if s.name in producers})


def sha256_file(path: Path) -> str:
    digest = hashlib.sha256()
    with path.open("rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            digest.update(chunk)
    return digest.hexdigest()
