"""One bad item must not crash a stage: a numeric caption in pairs, an oversized image in products."""
from __future__ import annotations

import json
import sqlite3
import struct
import zlib
from pathlib import Path

import numpy as np
import pytest
from PIL import Image
from test_pairs import PARAMS as PAIRS_PARAMS
from test_pairs import all_pairs, make_work
from test_products import PARAMS as PRODUCTS_PARAMS

from genbuild.io.jsonio import read_json, read_jsonl
from genbuild.io.video import ImageTooLargeError, read_image
from pvtt.data import pairs as PA
from pvtt.data import products as PR

# ----------------------------------------------------------------------------- pairs: numeric captions


def test_make_caption_numbers():
    assert PA.make_caption("watch", {"id": "p", "caption": 42}, 3.5) == "Replace the watch with 42; 3.5"
    assert PA.make_caption("watch", {"id": "p", "caption": None, "name": 7}, 0) == "Replace the watch with 7; 0"
    assert PA.make_caption("watch", {"id": 12, "caption": "", "name": None, "category": None}, None) == \
        "Replace the watch with 12"
    # Strings unchanged.
    assert PA.make_caption("watch", {"id": "p", "caption": " a box "}, " a clip ") == "Replace the watch with a box; a clip"
    assert PA.make_caption("watch", {"id": "p", "caption": "", "name": "Box"}, "") == "Replace the watch with Box"


def _untyped(conn: sqlite3.Connection, table: str) -> None:
    """Recreate ``table`` without column types, so numbers stay numbers (an index written by other code)."""
    cols = [r[1] for r in conn.execute(f"PRAGMA table_info({table})")]
    conn.execute(f"ALTER TABLE {table} RENAME TO old_{table}")
    conn.execute(f"CREATE TABLE {table}({', '.join(cols)})")
    conn.execute(f"INSERT INTO {table} SELECT * FROM old_{table}")
    conn.execute(f"DROP TABLE old_{table}")


def test_pairs_with_numeric_captions(tmp_path):
    work = make_work(tmp_path)
    conn = sqlite3.connect(work / "index.sqlite")
    _untyped(conn, "products")
    _untyped(conn, "videos")
    conn.execute("UPDATE products SET caption = 2024 WHERE id = 'prod_bottle'")
    conn.execute("UPDATE products SET caption = NULL, name = 7.5 WHERE id = 'prod_watch'")
    conn.execute("UPDATE videos SET caption = 12 WHERE id = 'vid000'")
    conn.commit()
    assert conn.execute("SELECT typeof(caption) FROM products WHERE id = 'prod_bottle'").fetchone() == ("integer",)
    conn.close()
    out = work / "pairs"
    PA.main(["--params", json.dumps(PAIRS_PARAMS), "--work", str(work), "--videos", "vid001", "vid000",
             "--num-shards", "2", "--out", str(out)])
    pairs = all_pairs(out, 2)
    assert pairs and all(isinstance(p["caption"], str) for p in pairs)
    caps = {(p["clip"], p["product"]): p["caption"] for p in pairs}
    for (clip, prod), cap in caps.items():
        if prod == "prod_bottle":
            assert cap.startswith("Replace the watch with 2024"), cap
        if prod == "prod_watch":
            assert cap.startswith("Replace the bottle with 7.5"), cap
        if clip.startswith("vid000"):
            assert cap.endswith("; 12"), cap


# ----------------------------------------------------------------------------- products: pixel cap


def png_claiming(path: Path, w: int, h: int) -> Path:
    """A tiny PNG whose IHDR claims w x h (8-bit RGB), with a few bytes of image data."""
    def chunk(kind: bytes, data: bytes) -> bytes:
        return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data) & 0xffffffff)
    ihdr = struct.pack(">IIBBBBB", w, h, 8, 2, 0, 0, 0)
    path.write_bytes(b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", ihdr) + chunk(b"IDAT", zlib.compress(b"\0" * 64))
                     + chunk(b"IEND", b""))
    return path


def _product_dir(tmp_path: Path) -> Path:
    d = tmp_path / "data"
    d.mkdir()
    img = np.full((64, 64, 3), 255, np.uint8)
    img[16:48, 20:44] = (40, 110, 60)
    Image.fromarray(img).save(d / "good.png")
    png_claiming(d / "bomb.png", 40000, 40000)          # 1.6 G pixels: over PIL's bomb limit too
    m = {"videos": [], "products": [
        {"id": "prod00", "category": "bottle", "name": "Bottle", "caption": "a bottle",
         "views": [{"view": "view0", "path": "good.png"}, {"view": "view1", "path": "bomb.png"}]},
        {"id": "prod01", "category": "box", "name": "Box", "caption": "a box",
         "views": [{"view": "view0", "path": "bomb.png"}]},
    ]}
    (d / "manifest.json").write_text(json.dumps(m))
    return d


def test_bomb_image_is_a_reject(tmp_path):
    d = _product_dir(tmp_path)
    out = tmp_path / "out" / "prod00"
    res = PR.run(d / "manifest.json", "prod00", out, PRODUCTS_PARAMS)
    assert res["status"] == "ok" and [v["view"] for v in res["views"]] == ["view0"]
    rows = read_jsonl(out / "rejects.jsonl")
    assert len(rows) == 1 and rows[0]["item"].endswith("view1"), rows
    reason = rows[0]["reason"]
    assert "bomb.png" in reason and "products.max_pixels" in reason and "80000000" in reason, reason

    out1 = tmp_path / "out" / "prod01"
    res1 = PR.run(d / "manifest.json", "prod01", out1, PRODUCTS_PARAMS)
    assert res1["status"] == "rejected" and read_json(out1 / "product.json")["status"] == "rejected"


def test_cap_checked_before_decoding(tmp_path):
    d = _product_dir(tmp_path)
    params = {"products": {**PRODUCTS_PARAMS["products"], "max_pixels": 64 * 64 - 1}}
    out = tmp_path / "out" / "prod00"
    res = PR.run(d / "manifest.json", "prod00", out, params)
    assert res["status"] == "rejected" and res["views"] == []
    reasons = sorted(r["reason"] for r in read_jsonl(out / "rejects.jsonl"))
    assert any("good.png: image is 64x64 = 4096 pixels, over the limit of 4095 pixels (params products.max_pixels)"
               in r for r in reasons), reasons

    png_claiming(tmp_path / "claims.png", 5000, 5000)        # 25 M: under PIL's limit, over the cap
    with pytest.raises(ImageTooLargeError, match=r"claims\.png: image is 5000x5000 = 25000000 pixels, over the limit"):
        read_image(tmp_path / "claims.png", max_pixels=1_000_000)


@pytest.mark.parametrize("bad", [0, -5, 1.5, True, "big"])
def test_max_pixels_param_validated(bad):
    with pytest.raises(ValueError, match="products.max_pixels"):
        PR.validate_params({"products": {**PRODUCTS_PARAMS["products"], "max_pixels": bad}})
    assert PR.validate_params(PRODUCTS_PARAMS)["max_pixels"] == 80_000_000
