"""Loaded models: one holder per model version, and an LRU cache of them under a memory budget."""

import logging
import threading
import time
from collections import OrderedDict
from collections.abc import Callable
from pathlib import Path

import numpy as np
from numpy.typing import NDArray

from inference import text
from inference.adapters import Adapter, Batch
from integration.manifest import Manifest

log = logging.getLogger(__name__)


def _size(path: Path) -> int:
    if path.is_file():
        return path.stat().st_size
    return sum(p.stat().st_size for p in path.rglob("*") if p.is_file())


class LoadedModel:
    """A model package's artifact, loaded on first use and kept until unloaded."""

    def __init__(self, manifest: Manifest, artifact: Path, adapter: Adapter) -> None:
        self.manifest = manifest
        self._artifact = artifact
        self._adapter = adapter
        self._model: object | None = None
        self._anchors: NDArray[np.float32] | None = None
        self._lock = threading.Lock()
        # The artifact's size on disk: what the memory budget counts (weights dominate a model's memory).
        self.size_bytes = _size(artifact)

    def load(self) -> object:
        """The loaded model; the first call loads it (blocking: call it from a thread)."""
        with self._lock:
            if self._model is None:
                started = time.perf_counter()
                self._model = self._adapter.load(self._artifact)
                log.info(
                    "loaded %s %s from %s in %.1fs",
                    self.manifest.name,
                    self.manifest.version,
                    self._artifact.name,
                    time.perf_counter() - started,
                )
            return self._model

    def unload(self) -> None:
        """Drop the loaded model; the next use loads it again."""
        with self._lock:
            self._model = None
            self._anchors = None

    @property
    def is_loaded(self) -> bool:
        """Whether the artifact is in memory now."""
        return self._model is not None

    def predict(self, batch: Batch) -> NDArray[np.float32]:
        """Raw model outputs for a batch (blocking: call it from a thread)."""
        return self._adapter.predict(self.load(), batch)

    def anchors(self) -> NDArray[np.float32]:
        """Text models: the embeddings of the outputs' descriptions and negations, computed once."""
        if self._anchors is None:
            self._anchors = self.predict(text.anchor_texts(self.manifest))
        return self._anchors


class ModelCache:
    """Loaded model versions, least recently used first out when their sizes exceed the budget.

    The model just asked for always stays, even alone over budget: a worker must serve it.
    """

    def __init__(self, loader: Callable[[str, str], LoadedModel], *, budget_bytes: float) -> None:
        self._loader = loader
        self._budget = budget_bytes
        self._models: OrderedDict[tuple[str, str], LoadedModel] = OrderedDict()
        self._lock = threading.Lock()

    def get(self, name: str, version: str) -> LoadedModel:
        """The loaded model of this version, loading it (and unloading others) if needed; blocking."""
        key = (name, version)
        with self._lock:
            model = self._models.get(key)
            if model is None:
                model = self._loader(name, version)
                self._models[key] = model
            self._models.move_to_end(key)
            model.load()
            self._evict(keep=key)
            return model

    def _evict(self, *, keep: tuple[str, str]) -> None:
        while sum(m.size_bytes for m in self._models.values()) > self._budget and len(self._models) > 1:
            key = next(k for k in self._models if k != keep)
            evicted = self._models.pop(key)
            evicted.unload()
            log.info("unloaded %s %s (memory budget %.0f MB)", key[0], key[1], self._budget / 1e6)

    def loaded(self) -> list[tuple[str, str]]:
        """(name, version) of every loaded model, least recently used first."""
        with self._lock:
            return list(self._models)
