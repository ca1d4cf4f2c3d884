"""Using an exported screening model: ``arc_ray.load_model`` and ``arc predict``.

An export folder (written by :func:`arc_ray.export.export_model`) holds
``model.safetensors`` and ``export.json`` (timm model name, image size, normalisation,
operating threshold). :func:`load_model` rebuilds the model from those two files with
timm and torch only: no Ray, no history, no study file, so the model runs wherever the
folder is copied.

Images are prepared exactly as in training (:func:`trainables.data.decode_image`: RGB,
resized to the export's image size with PIL's bilinear filter, scaled to [0, 1],
normalised), so a file scored here gets the probability the export's model card
computed for it (bit for bit when batched alike; a different batch size may run other
CPU kernels and move the 7th decimal).

``arc predict EXPORT_DIR INPUT --out preds.csv`` scores a folder (recursively), a glob
pattern, a CSV manifest (column ``path``, relative to the manifest) or one image, and
writes one row per image: ``path``, ``probability`` (of the positive class),
``decision`` (1 when ``probability >= threshold``, else 0) and ``error`` (empty, or why
the image could not be read, in which case probability and decision are empty). An
unreadable image is named on stderr and skipped; the rest are still scored.
"""

from __future__ import annotations

import csv
import glob
import json
import logging
import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any, Sequence

import numpy as np

from arc_ray.errors import ConfigValidationError, DataError, Violation

if TYPE_CHECKING:
    import torch

logger = logging.getLogger(__name__)

MODEL_FILE = "model.safetensors"
EXPORT_FILE = "export.json"
_BATCH = 64


class ExportedModel:
    """An exported screening model: call it for probabilities, ``.predict`` for decisions.

    Accepts a float tensor ``N×3×H×W`` in [0, 1], a uint8 tensor or array ``N×H×W×3``
    or ``N×3×H×W`` (0-255), a single image of either kind, a ``PIL.Image`` or a list of
    them. Tensors of another size are resized to :attr:`image_size` (bilinear,
    antialiased); PIL images exactly as in training.

    Attributes:
        threshold: the operating threshold; a probability ``>=`` it is a positive call.
        image_size: the side, in pixels, the model was trained at.
        info: the whole ``export.json``.
    """

    def __init__(self, export_dir: str | os.PathLike[str], device: str = "cpu") -> None:
        import torch
        from safetensors.torch import load_file

        from trainables.timm_classifier import Config, build_model

        folder = Path(export_dir)
        for name in (EXPORT_FILE, MODEL_FILE):
            if not (folder / name).is_file():
                raise ConfigValidationError([Violation("export_dir", str(folder),
                                                       f"is not a model export: {name} is missing "
                                                       "(write one with `arc export`)")])
        self.info: dict[str, Any] = json.loads((folder / EXPORT_FILE).read_text(encoding="utf-8"))
        self.threshold = float(self.info["threshold"]) if self.info.get("threshold") is not None else 0.5
        self.image_size = int(self.info["image_size"])
        self.positive_class = str(self.info.get("positive_class", "positive"))
        self.device = torch.device(device)
        cfg = Config.model_validate({**self.info["config"], "pretrained": False, "device": "cpu"})
        self.model = build_model(cfg)
        self.model.load_state_dict(load_file(str(folder / MODEL_FILE)))
        self.model.to(self.device).eval()
        self._mean = torch.tensor(self.info["mean"], dtype=torch.float32, device=self.device).view(1, 3, 1, 1)
        self._std = torch.tensor(self.info["std"], dtype=torch.float32, device=self.device).view(1, 3, 1, 1)

    def __call__(self, images: Any) -> np.ndarray:
        """Probabilities of the positive class, one per image (float64 ``N``)."""
        import torch

        batch = self._as_batch(images)
        out = []
        with torch.inference_mode():
            for chunk in batch.split(_BATCH):
                x = (chunk.to(self.device).float() / 255 if chunk.dtype == torch.uint8
                     else chunk.to(self.device).float())
                if x.shape[-2:] != (self.image_size, self.image_size):
                    x = torch.nn.functional.interpolate(x, size=(self.image_size, self.image_size),
                                                        mode="bilinear", antialias=True, align_corners=False)
                logits = self.model((x - self._mean) / self._std).float()
                out.append(torch.softmax(logits, 1)[:, 1].cpu())
        return torch.cat(out).double().numpy() if out else np.zeros(0)

    def predict(self, images: Any) -> np.ndarray:
        """Decisions at :attr:`threshold` (bool ``N``; True = the positive class)."""
        return self(images) >= self.threshold

    def _as_batch(self, images: Any) -> "torch.Tensor":
        import torch
        from PIL import Image

        if isinstance(images, Image.Image):
            images = [images]
        if isinstance(images, (list, tuple)):
            if images and all(isinstance(im, Image.Image) for im in images):
                return torch.stack([_from_pil(im, self.image_size) for im in images])
            return torch.stack([self._as_batch(im)[0] for im in images]) if images else torch.zeros(0, 3, 1, 1)
        x = torch.as_tensor(np.asarray(images)) if isinstance(images, np.ndarray) else images
        if not isinstance(x, torch.Tensor):
            raise TypeError(f"expected a tensor, an array, a PIL image or a list of them, got {type(images).__name__}")
        if x.dim() == 3:
            x = x.unsqueeze(0)
        if x.dim() != 4:
            raise ValueError(f"expected images N×3×H×W or N×H×W×3, got shape {tuple(x.shape)}")
        if x.shape[1] != 3 and x.shape[-1] == 3:  # channels last
            x = x.permute(0, 3, 1, 2)
        if x.shape[1] != 3:
            raise ValueError(f"expected 3 colour channels, got shape {tuple(x.shape)}")
        return x.contiguous()


def _from_pil(image: Any, size: int) -> "torch.Tensor":
    """A PIL image prepared as :func:`trainables.data.decode_image` prepares a file."""
    import torch
    from PIL import Image

    arr = np.asarray(image.convert("RGB").resize((size, size), Image.Resampling.BILINEAR), dtype=np.uint8)
    return torch.from_numpy(arr.copy()).permute(2, 0, 1).contiguous()


def load_model(export_dir: str | os.PathLike[str], device: str = "cpu") -> ExportedModel:
    """Load a model folder written by ``arc export`` (needs timm and torch, not Ray).

    Args:
        export_dir: the folder holding ``model.safetensors`` and ``export.json``.
        device: where to run it (``"cpu"``, ``"cuda"``).

    Returns:
        an :class:`ExportedModel`: ``model(images)`` → probabilities,
        ``model.predict(images)`` → decisions, ``model.threshold``.

    Raises:
        ConfigValidationError: the folder is not an export.
    """
    return ExportedModel(export_dir, device)


# ----------------------------------------------------------------------------- files
def list_images(source: str | os.PathLike[str]) -> list[str]:
    """The image paths named by a folder (recursive), a glob pattern, a CSV manifest or one file.

    Raises:
        DataError: nothing matches, or the manifest has no ``path`` column.
    """
    from trainables.data import IMAGE_EXTENSIONS

    text = str(source)
    path = Path(text)
    if path.is_dir():
        found = sorted(str(p) for p in path.rglob("*")
                       if p.is_file() and p.suffix.lower() in IMAGE_EXTENSIONS and not p.name.startswith("."))
    elif path.is_file() and path.suffix.lower() == ".csv":
        import pandas as pd

        try:
            frame = pd.read_csv(path)
        except Exception as exc:  # pandas raises many types for a malformed file
            raise DataError(f"manifest {path} cannot be read: {exc}") from exc
        if "path" not in frame.columns:
            raise DataError(f"manifest {path} has no 'path' column (it has {list(frame.columns)})")
        found = [str(p if Path(p).is_absolute() else path.parent / p) for p in frame["path"].dropna().astype(str)]
    elif path.is_file():
        found = [text]
    elif glob.has_magic(text):
        found = sorted(p for p in glob.glob(text, recursive=True) if Path(p).is_file())
    else:
        raise DataError(f"{text} is not a folder, an image, a CSV manifest or a glob pattern that matches")
    if not found:
        raise DataError(f"no image found in {text}")
    return found


@dataclass
class PredictSummary:
    """What ``arc predict`` did: how many images were scored, and which could not be read."""

    out: Path
    n_scored: int
    errors: dict[str, str] = field(default_factory=dict)  # path → reason


def predict_files(model: ExportedModel, paths: Sequence[str]) -> list[tuple[str, float | None, str]]:
    """Score image files one batch at a time; an unreadable file gets ``(path, None, reason)``."""
    import torch

    from trainables.data import decode_image

    rows: list[tuple[str, float | None, str]] = []
    for start in range(0, len(paths), _BATCH):
        chunk = list(paths[start:start + _BATCH])
        decoded = [decode_image(p, model.image_size) if os.path.isfile(p) else (None, "file not found")
                   for p in chunk]
        good = [img for img, _ in decoded if img is not None]
        probs = iter(model(torch.stack(good)).tolist() if good else [])
        rows += [(p, next(probs), "") if img is not None else (p, None, reason)
                 for p, (img, reason) in zip(chunk, decoded)]
    return rows


def predict_images(export_dir: str | os.PathLike[str], source: str | os.PathLike[str],
                   out: str | os.PathLike[str], device: str = "cpu") -> PredictSummary:
    """``arc predict``: score images with an export and write the CSV (see the module docstring).

    Raises:
        ConfigValidationError: ``export_dir`` is not an export.
        DataError: no image was found, or none could be read.
    """
    model = load_model(export_dir, device)
    rows = predict_files(model, list_images(source))
    out = Path(out)
    out.parent.mkdir(parents=True, exist_ok=True)
    tmp = out.with_name(f".{out.name}.tmp")
    with open(tmp, "w", newline="", encoding="utf-8") as fh:
        writer = csv.writer(fh)
        writer.writerow(["path", "probability", "decision", "error"])
        for path, prob, error in rows:
            writer.writerow([path, "" if prob is None else repr(prob),
                             "" if prob is None else int(prob >= model.threshold), error])
    tmp.replace(out)
    errors = {p: e for p, prob, e in rows if prob is None}
    scored = len(rows) - len(errors)
    if not scored:
        raise DataError(f"none of the {len(rows)} images could be read (see {out})")
    return PredictSummary(out=out, n_scored=scored, errors=errors)


__all__ = ["ExportedModel", "PredictSummary", "list_images", "load_model", "predict_files", "predict_images"]
