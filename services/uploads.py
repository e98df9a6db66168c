"""Receiving uploaded weights safely: size-limited, format-checked, never unpickled.

Accepted: safetensors (a JSON header and raw tensor bytes; nothing executable), or a torch
state dict read with ``torch.load(weights_only=True)``, whose restricted unpickler only builds
tensors and plain containers and refuses any other global (no ``pickle.load`` on client bytes).
The weights are then loaded into the named architecture (strict), so an upload that does not fit
is refused at upload time rather than failing a job later.

Before anything is loaded the file is checked cold, because a loader trusts its input's sizes: a
1 MB deflated torch zip once expanded to 1 GB inside ``torch.load``. Every zip member's declared
uncompressed size, and then the bytes it really inflates to (read in blocks, stopping at the
cap), must stay under the cap (the upload limit, and no more than a few times the architecture's
own weights); a safetensors header must be small and its tensors must lie inside the file.
Errors name the field and never a server path.
"""

from __future__ import annotations

import hashlib
import json
import os
import struct
import time
import zipfile
from dataclasses import dataclass
from pathlib import Path
from typing import Iterator

from automl.data import load_dataset
from automl.models import build_model, is_known_model, load_weights

from .errors import UploadError, UploadTooLarge  # noqa: F401  (defined with their status codes)


MAX_ZIP_MEMBERS = 10_000
MAX_SAFETENSORS_HEADER = 16 << 20
WEIGHTS_SLACK = 4          # unpacked bytes allowed per byte of the architecture's float32 weights
WEIGHTS_FLOOR = 1 << 20    # plus this much (a zip's pickle, byteorder and version records)


def check_zip(path: Path, cap: int) -> None:
    """Refuse a zip whose members declare, or really inflate to, more than ``cap`` bytes in all,
    before ``torch.load`` opens it. Inflating is bounded: at most ``cap`` + one block is read."""
    try:
        with zipfile.ZipFile(path) as zf:
            members = zf.infolist()
            if len(members) > MAX_ZIP_MEMBERS:
                raise UploadError(f"chunk: the archive has {len(members)} members; at most {MAX_ZIP_MEMBERS}")
            declared = sum(m.file_size for m in members)
            if declared > cap:
                raise UploadError(f"chunk: the archive declares {declared} unpacked bytes; this "
                                     f"architecture's weights allow at most {cap}")
            total = 0
            for m in members:
                with zf.open(m) as f:
                    for block in iter(lambda: f.read(1 << 20), b""):
                        total += len(block)
                        if total > cap:
                            raise UploadError(f"chunk: the archive unpacks to more than {cap} bytes "
                                                 f"(member {m.filename[-64:]!r} declared {m.file_size})")
    except (zipfile.BadZipFile, zipfile.LargeZipFile, NotImplementedError, EOFError, OSError) as exc:
        raise UploadError(f"chunk: not a readable zip archive ({type(exc).__name__})") from None


def check_safetensors(path: Path, size: int) -> None:
    """The header is small JSON and every tensor's byte range lies inside the file."""
    with path.open("rb") as f:
        (n,) = struct.unpack("<Q", f.read(8))
        if n > MAX_SAFETENSORS_HEADER or 8 + n > size:
            raise UploadError(f"chunk: safetensors header of {n} bytes does not fit the file")
        try:
            header = json.loads(f.read(n))
        except ValueError:
            raise UploadError("chunk: the safetensors header is not JSON") from None
    if not isinstance(header, dict):
        raise UploadError("chunk: the safetensors header is not a JSON object")
    data = size - 8 - n
    for name, info in header.items():
        if name == "__metadata__":
            continue
        offsets = info.get("data_offsets") if isinstance(info, dict) else None
        if not (isinstance(offsets, list) and len(offsets) == 2
                and all(isinstance(o, int) for o in offsets) and 0 <= offsets[0] <= offsets[1] <= data):
            raise UploadError(f"chunk: tensor {str(name)[:64]!r} lies outside the file")


def weights_cap(model: object, max_bytes: int) -> int:
    """Unpacked bytes an upload for ``model`` may hold: a few times its float32 weights."""
    own = sum(t.numel() * 4 for t in model.state_dict().values())  # type: ignore[attr-defined]
    return min(max_bytes, WEIGHTS_SLACK * own + WEIGHTS_FLOOR)


@dataclass
class Header:
    architecture: str
    dataset_spec: str
    dataset: str
    format: str          # "safetensors" | "torch_state_dict" | "" (detect)
    size_bytes: int


def sniff_format(path: Path) -> str:
    """safetensors starts with a little-endian u64 header length and '{'; torch.save writes a
    zip archive ('PK')."""
    with path.open("rb") as f:
        head = f.read(9)
    if len(head) >= 9 and head[8:9] == b"{":
        (n,) = struct.unpack("<Q", head[:8])
        if 0 < n < path.stat().st_size:
            return "safetensors"
    if head[:2] == b"PK":
        return "torch_state_dict"
    raise UploadError("chunk: the bytes are neither safetensors nor a torch.save zip archive")


def receive(chunks: Iterator[bytes], header: Header, upload_dir: Path, upload_id: str,
            max_bytes: int) -> dict:
    """Write the chunks to ``upload_dir``, check them, return the upload's record."""
    if not is_known_model(header.architecture):
        raise UploadError(f"header.architecture: unknown model {header.architecture[:64]!r}")
    if header.size_bytes > max_bytes:
        raise UploadTooLarge(f"header.size_bytes: {header.size_bytes} bytes is over the server's "
                             f"limit of {max_bytes} bytes")
    upload_dir.mkdir(parents=True, exist_ok=True)
    tmp = upload_dir / f"{upload_id}.part"
    digest = hashlib.sha256()
    size = 0
    try:
        with tmp.open("wb") as f:
            for chunk in chunks:
                size += len(chunk)
                if size > max_bytes:
                    raise UploadTooLarge(f"chunk: the upload exceeds the server's limit of "
                                         f"{max_bytes} bytes")
                digest.update(chunk)
                f.write(chunk)
        if size == 0:
            raise UploadError("chunk: no bytes were sent after the header")
        if header.size_bytes and header.size_bytes != size:
            raise UploadError(f"header.size_bytes: says {header.size_bytes} bytes but {size} were sent")
        sniffed = sniff_format(tmp)
        fmt = header.format or sniffed
        if fmt != sniffed:
            raise UploadError(f"header.format: says {fmt} but the bytes are {sniffed}")
        try:
            data = load_dataset(header.dataset_spec)
            model = build_model(header.architecture, data.in_channels, data.num_classes)
        except Exception as exc:
            raise UploadError(f"header.dataset: cannot build {header.architecture} for "
                              f"{header.dataset[:64]!r} ({type(exc).__name__})") from None
        cap = weights_cap(model, max_bytes)
        if fmt == "safetensors":
            check_safetensors(tmp, size)
        else:
            check_zip(tmp, cap)
        final = upload_dir / f"{upload_id}{'.safetensors' if fmt == 'safetensors' else '.pt'}"
        os.replace(tmp, final)
        try:
            load_weights(model, final)
        except Exception as exc:  # any loader error means: not these weights
            final.unlink(missing_ok=True)
            reason = str(exc).replace(str(final), final.name).replace(str(upload_dir), "")
            raise UploadError(f"chunk: weights do not load into {header.architecture} for "
                              f"{header.dataset[:64]}: {reason}") from None
    finally:
        tmp.unlink(missing_ok=True)
    return {"id": upload_id, "architecture": header.architecture, "dataset": header.dataset,
            "format": fmt, "path": str(final), "size_bytes": size, "sha256": digest.hexdigest(),
            "created_at": time.time()}
