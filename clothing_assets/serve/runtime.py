"""Which runtime the server serves a version with: the batch path's, so that a photo gets the
answer `clothing_predictions` wrote for it (`runtime_choice.serving_runtime`)."""

from __future__ import annotations

import hashlib
from pathlib import Path

from clothing_assets.ml.runtime import ORT_INT8, TORCH, int8_cache_file, int8_payload
from clothing_assets.ml.runtime import missing_packages as int8_missing
from clothing_assets.ml.runtime_choice import serving_runtime


class RuntimeSelector:
    """The runtime for each version under CLOTHING_SCORING_RUNTIME=`asked`, and the int8 model
    the batch path made for it, read from `cache_dir/runtimes/` (the server never makes one:
    it has no training images to calibrate on). An int8 model that is not there yet is looked
    for again only when its file changes, not hashed again at every poll."""

    def __init__(self, asked: str, cache_dir: str | Path, *, gpu: bool = False) -> None:
        self.asked, self.cache_dir, self.gpu = asked, Path(cache_dir).expanduser(), gpu
        self._missed: tuple[tuple[object, ...], str] | None = None
        self._sha256: tuple[str, str] | None = None  # (version, its file's SHA-256)

    @classmethod
    def from_settings(cls) -> RuntimeSelector:
        """The selector for CLOTHING_SCORING_RUNTIME and CLOTHING_CACHE_DIR on this machine
        (torch on a GPU, as the server's model then runs there)."""
        from clothing_assets.ml.devices import select_device
        from clothing_assets.settings import setting

        return cls(
            setting("CLOTHING_SCORING_RUNTIME"), setting("CLOTHING_CACHE_DIR"),
            gpu=select_device("auto").type == "cuda",
        )  # fmt: skip

    def choose(
        self, version: str, data: bytes, serving: str | None = None
    ) -> tuple[str, str, bytes | None]:
        """(runtime, why, the int8 model's bytes when the runtime is int8 and not `serving`
        already) for `version`, whose model file is `data`: torch, with the reason, when the
        int8 model cannot be served here."""
        if self._sha256 is None or self._sha256[0] != version:
            self._sha256 = (version, hashlib.sha256(data).hexdigest())
        sha256 = self._sha256[1]
        runtime, why = serving_runtime(self.asked, version, sha256, self.cache_dir, gpu=self.gpu)
        if runtime in (TORCH, serving):
            return runtime, why, None
        int8, problem = self._int8(version, sha256)
        if int8 is None:
            return TORCH, f"{why}; serving torch instead: {problem}", None
        return ORT_INT8, why, int8

    def _int8(self, version: str, sha256: str) -> tuple[bytes | None, str]:
        missing = int8_missing()
        if missing:
            return None, f"{', '.join(missing)} not installed with the server (the `int8` extra)"
        path = int8_cache_file(self.cache_dir, version, ORT_INT8)
        try:
            stat = path.stat()
            key: tuple[object, ...] = (version, stat.st_ino, stat.st_size, stat.st_mtime_ns)
        except OSError:
            key = (version, None)
        if self._missed is not None and self._missed[0] == key:
            return None, self._missed[1]
        try:
            int8 = path.read_bytes()
            int8_payload(int8, sha256)
            return int8, ""
        except (OSError, ValueError) as exc:
            problem = f"the int8 model at {path} is not usable yet ({exc})"
            self._missed = (key, problem)
            return None, problem
