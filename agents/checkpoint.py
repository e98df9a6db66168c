"""Saving and restoring an agent so that a stopped search resumes its episode count.

What is kept (under ``<state_dir>/agent/``): the SB3 model (``model.zip``: networks, optimisers),
the replay buffer of off-policy agents (``replay_buffer.pkl``), torch's RNG state, and a JSON
with everything else the strategy needs (episode and evaluation counters, the noise generator
and schedule, the reward baseline, the policies already scored and the learning curve). Each
file is written to a temporary name and renamed, and the JSON (written last) names the
episode the files belong to, so a crash mid-save leaves the previous checkpoint readable.
"""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any

import torch


def _atomic_write_text(path: Path, text: str) -> None:
    tmp = path.with_name(path.name + ".tmp")
    tmp.write_text(text)
    os.replace(tmp, path)


class AgentCheckpoint:
    """One agent's checkpoint directory."""

    def __init__(self, directory: Path) -> None:
        self.dir = Path(directory)

    @property
    def state_path(self) -> Path:
        return self.dir / "state.json"

    @property
    def model_path(self) -> Path:
        return self.dir / "model.zip"

    @property
    def buffer_path(self) -> Path:
        return self.dir / "replay_buffer.pkl"

    def exists(self) -> bool:
        return self.state_path.is_file() and self.model_path.is_file()

    def save(self, model: Any, state: dict[str, Any], replay_buffer: bool) -> None:
        self.dir.mkdir(parents=True, exist_ok=True)
        tmp_model = self.dir / "model.tmp.zip"
        model.save(tmp_model)
        os.replace(tmp_model, self.model_path)
        if replay_buffer and getattr(model, "replay_buffer", None) is not None:
            tmp_buf = self.dir / "replay_buffer.tmp.pkl"
            model.save_replay_buffer(tmp_buf)
            os.replace(tmp_buf, self.buffer_path)
        tmp_rng = self.dir / "torch_rng.tmp.pt"
        torch.save(torch.get_rng_state(), tmp_rng)
        os.replace(tmp_rng, self.dir / "torch_rng.pt")
        _atomic_write_text(self.state_path, json.dumps(state))

    def load_state(self) -> dict[str, Any]:
        return json.loads(self.state_path.read_text())

    def load_model(self, cls: Any, env: Any, replay_buffer: bool) -> Any:
        model = cls.load(self.model_path, env=env, device="cpu")
        if replay_buffer and self.buffer_path.is_file():
            model.load_replay_buffer(self.buffer_path)
        rng = self.dir / "torch_rng.pt"
        if rng.is_file():
            torch.set_rng_state(torch.load(rng))
        return model
