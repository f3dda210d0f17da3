"""Tiny on-disk fixtures in the real Waterbirds, Spawrious and CelebA layouts, and a local HTTP
server.

The images are small random-colour PNG / JPEG files; what is under test is the layout, the labels
and the loading, not the pixels.
"""
from __future__ import annotations

import http.server
import io
import tarfile
import threading
from contextlib import contextmanager
from pathlib import Path
from typing import Iterator

import numpy as np
import pandas as pd
from PIL import Image

from domainbed_sc.datasets.celeba import ATTRIBUTES
from domainbed_sc.datasets.spawrious import BREEDS, LOCATIONS

# (split code, y, place) -> count; every group in every split
WATERBIRDS_COUNTS = {(0, 0, 0): 8, (0, 0, 1): 2, (0, 1, 0): 2, (0, 1, 1): 6,
                     **{(split, y, place): 3 for split in (1, 2) for y in (0, 1) for place in (0, 1)}}
# the real totals of every group over all 11,788 images (docs/METHODS.md §D.4: train + val + test)
WATERBIRDS_REAL_GROUPS = {(0, 0): 3498 + 467 + 2255, (0, 1): 184 + 466 + 2255,
                          (1, 0): 56 + 133 + 642, (1, 1): 1057 + 133 + 642}
BIRDS = ("001.Black_footed_Albatross", "036.Northern_Flicker")  # one folder per y


def write_image(path: Path, rng: np.random.Generator, size: tuple[int, int] = (20, 14)) -> None:
    """A random-colour image with a little noise; the suffix picks PNG or JPEG."""
    colour = rng.integers(0, 256, 3)
    pixels = np.clip(colour + rng.integers(-20, 21, (size[1], size[0], 3)), 0, 255)
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.fromarray(pixels.astype(np.uint8)).save(path)


def make_waterbirds(data_dir: Path, counts: dict[tuple[int, int, int], int] = WATERBIRDS_COUNTS,
                    images: bool = True, seed: int = 0) -> Path:
    """``data_dir/waterbirds_v1.0`` with metadata.csv and images (empty files if not ``images``).

    Rows are shuffled so that no split or group is contiguous in the metadata.
    """
    rng = np.random.default_rng(seed)
    root = data_dir / "waterbirds_v1.0"
    rows = [(split, y, place) for (split, y, place), n in counts.items() for _ in range(n)]
    rows = [rows[i] for i in rng.permutation(len(rows))]
    records = []
    for img_id, (split, y, place) in enumerate(rows, start=1):
        name = f"{BIRDS[y]}/{BIRDS[y].split('.')[1]}_{img_id:04d}_{rng.integers(1e6)}.jpg"
        if images:
            write_image(root / name, rng)
        else:
            (root / name).parent.mkdir(parents=True, exist_ok=True)
            (root / name).touch()
        records.append({"img_id": img_id, "img_filename": name, "y": y, "split": split,
                        "place": place, "place_filename": f"/{'bo' if place else 'fb'}/x.jpg"})
    pd.DataFrame(records).to_csv(root / "metadata.csv", index=False)
    (root / "RELEASE_v1.0.txt").write_text("fixture\n")
    return data_dir


def spawrious_names(location: str, breed: str, n: int, rng: np.random.Generator) -> list[str]:
    """Mixed PNG / JPEG file names, in a shuffled (creation) order that is not the sorted one."""
    return [f"{location}_{breed}_{k:03d}.{'png' if k % 2 else 'jpg'}" for k in rng.permutation(n)]


def make_spawrious(data_dir: Path, per_folder: int = 10, seed: int = 0) -> Path:
    """``data_dir/spawrious224/{0,1}/{location}/{breed}/`` with ``per_folder`` images each,
    plus a non-image file per folder that the loader must ignore."""
    rng = np.random.default_rng(seed)
    for folder in (0, 1):
        for location in LOCATIONS:
            for breed in BREEDS:
                d = data_dir / "spawrious224" / str(folder) / location / breed
                for name in spawrious_names(location, breed, per_folder, rng):
                    write_image(d / name, rng, (12, 12))
                (d / "captions.txt").write_text("not an image\n")
    return data_dir


# (partition code, Blond_Hair, Male) -> count; training follows the real correlation (blond
# women and dark-haired men are the common pairs), val and test hold every group
CELEBA_COUNTS = {(0, 0, 0): 10, (0, 0, 1): 8, (0, 1, 0): 6, (0, 1, 1): 2,
                 **{(split, y, s): 3 for split in (1, 2) for y in (0, 1) for s in (0, 1)}}
#: the real per-split counts of g = 2·Blond_Hair + Male (docs/METHODS.md §D.8)
CELEBA_REAL_SPLITS = {"train": [71629, 66874, 22880, 1387], "val": [8535, 8276, 2874, 182],
                      "test": [9767, 7535, 2480, 180]}
#: torchvision's CelebA also wants these (read by the cross-check test only)
CELEBA_EXTRA = {"identity_CelebA.txt": (None, None), "list_bbox_celeba.txt":
                ("image_id x_1 y_1 width height", 4), "list_landmarks_align_celeba.txt":
                ("lefteye_x lefteye_y righteye_x righteye_y nose_x nose_y leftmouth_x leftmouth_y "
                 "rightmouth_x rightmouth_y", 10)}


def _celeba_attrs(rows: list[tuple[int, int, int]], rng: np.random.Generator) -> np.ndarray:
    """±1 attributes: Blond_Hair and Male as given; in training Smiling agrees with Attractive
    80 % of the time (a positive correlation, the opposite sign of Blond_Hair × Male's), in val
    and test the four (Attractive, Smiling) pairs take turns; the rest random."""
    attrs = rng.choice([-1, 1], size=(len(rows), len(ATTRIBUTES)))
    col = {a: i for i, a in enumerate(ATTRIBUTES)}
    attrs[:, col["Blond_Hair"]] = [2 * y - 1 for _, y, _ in rows]
    attrs[:, col["Male"]] = [2 * s - 1 for _, _, s in rows]
    agree = np.where(rng.random(len(rows)) < 0.8, 1, -1)
    attrs[:, col["Smiling"]] = agree * attrs[:, col["Attractive"]]
    held_out = np.flatnonzero([split != 0 for split, _, _ in rows])
    attrs[held_out, col["Attractive"]] = [1 if k % 2 else -1 for k in range(len(held_out))]
    attrs[held_out, col["Smiling"]] = [1 if k // 2 % 2 else -1 for k in range(len(held_out))]
    return attrs


def make_celeba(data_dir: Path, counts: dict[tuple[int, int, int], int] = CELEBA_COUNTS,
                images: bool = True, seed: int = 0) -> Path:
    """``data_dir/celeba`` in the release layout: img_align_celeba/NNNNNN.jpg (18×22, the release's
    aspect; empty files if not ``images``), list_attr_celeba.txt, list_eval_partition.txt and the
    three other text files of the release.  Partition codes are shuffled over the file names."""
    rng = np.random.default_rng(seed)
    root = data_dir / "celeba"
    (root / "img_align_celeba").mkdir(parents=True, exist_ok=True)
    rows = [key for key, n in counts.items() for _ in range(n)]
    rows = [rows[i] for i in rng.permutation(len(rows))]
    names = [f"{k:06d}.jpg" for k in range(1, len(rows) + 1)]
    for name in names:
        if images:
            write_image(root / "img_align_celeba" / name, rng, (18, 22))
        else:
            (root / "img_align_celeba" / name).touch()
    attrs = _celeba_attrs(rows, rng)
    lines = [str(len(rows)), " ".join(ATTRIBUTES) + " "]
    lines += [f"{n} " + " ".join(f"{v:2d}" for v in a) for n, a in zip(names, attrs)]
    (root / "list_attr_celeba.txt").write_text("\n".join(lines) + "\n")
    (root / "list_eval_partition.txt").write_text(
        "".join(f"{n} {split}\n" for n, (split, _, _) in zip(names, rows)))
    for file, (header, width) in CELEBA_EXTRA.items():
        body = [f"{n} " + " ".join(["1"] * (width or 1)) for n in names]
        (root / file).write_text("\n".join(body if header is None else
                                           [str(len(names)), header, *body]) + "\n")
    return data_dir


class _RangeHandler(http.server.BaseHTTPRequestHandler):
    """Serves ``server.files`` (path -> bytes), honouring ``Range`` unless ``server.ranges`` is off;
    with ``server.cut`` set it announces the whole body but hangs up after that many bytes."""

    def do_GET(self) -> None:  # noqa: N802 (http.server's naming)
        self.server.requests.append((self.path, self.headers.get("Range")))
        blob = self.server.files.get(self.path)
        if blob is None:
            self.send_error(404)
            return
        start = 0
        rng = self.headers.get("Range")
        if rng and self.server.ranges:
            start = int(rng.split("=")[1].split("-")[0])
            if start >= len(blob):
                self.send_error(416)
                return
            self.send_response(206)
            self.send_header("Content-Range", f"bytes {start}-{len(blob) - 1}/{len(blob)}")
        else:
            self.send_response(200)
        self.send_header("Content-Length", str(len(blob) - start))
        self.end_headers()
        end = len(blob) if self.server.cut is None else start + self.server.cut
        self.wfile.write(blob[start:end])
        self.close_connection = True

    def log_message(self, *args) -> None:
        pass


@contextmanager
def serve(files: dict[str, bytes], ranges: bool = True,
          cut: int | None = None) -> Iterator[http.server.HTTPServer]:
    """An HTTP server on 127.0.0.1 in a thread; ``server.url`` is its base URL and
    ``server.requests`` lists the (path, Range header) of every request."""
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), _RangeHandler)
    server.files, server.ranges, server.cut, server.requests = files, ranges, cut, []
    server.url = f"http://127.0.0.1:{server.server_address[1]}"
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield server
    finally:
        server.shutdown()
        server.server_close()


def tar_gz(members: dict[str, Path]) -> bytes:
    """A .tar.gz (as bytes) holding each source path under its archive name."""
    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode="w:gz") as tar:
        for arcname, src in members.items():
            tar.add(src, arcname=arcname)
    return buf.getvalue()
