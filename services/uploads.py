"""Receiving uploaded weights safely: size-limited, format-checked, never unpickled.

Accepted: safetensors (a JSON header and raw tensor bytes; nothing executable), or a torch
state dict read with ``torch.load(weights_only=True)``, whose restricted unpickler only builds
tensors and plain containers and refuses any other global (no ``pickle.load`` on client bytes).
The weights are then loaded into the named architecture (strict), so an upload that does not fit
is refused at upload time rather than failing a job later.
"""

from __future__ import annotations

import hashlib
import os
import struct
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Iterator

from automl.data import load_dataset
from automl.models import build_model, is_known_model, load_weights


class UploadError(ValueError):
    """The upload is malformed or does not fit its architecture (INVALID_ARGUMENT)."""


class UploadTooLarge(UploadError):
    """Over the server's limit (RESOURCE_EXHAUSTED)."""


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
        raise UploadError(f"header.architecture: unknown model {header.architecture!r}")
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
        fmt = header.format or sniff_format(tmp)
        if fmt != sniff_format(tmp):
            raise UploadError(f"header.format: says {fmt} but the bytes are {sniff_format(tmp)}")
        final = upload_dir / f"{upload_id}{'.safetensors' if fmt == 'safetensors' else '.pt'}"
        os.replace(tmp, final)
        try:
            data = load_dataset(header.dataset_spec)
            model = build_model(header.architecture, data.in_channels, data.num_classes)
            load_weights(model, final)
        except Exception as exc:  # any loader error means: not these weights
            final.unlink(missing_ok=True)
            raise UploadError(f"chunk: weights do not load into {header.architecture} for "
                              f"{header.dataset}: {exc}") from None
    finally:
        tmp.unlink(missing_ok=True)
    return {"id": upload_id, "architecture": header.architecture, "dataset": header.dataset,
            "format": fmt, "path": str(final), "size_bytes": size, "sha256": digest.hexdigest(),
            "created_at": time.time()}
