"""``collect --html``: the static report of a tiny real sweep, checked by its structure."""
from __future__ import annotations

import contextlib
import io
import json
import shlex
from html.parser import HTMLParser
from pathlib import Path
from urllib.parse import unquote

import pytest

from domainbed_sc.cli import build_parser, main
from domainbed_sc.collect import curves
from domainbed_sc.training.records import DONE, RESULTS, RunArgs
from test_collect import record, write_run

SWEEP = """
datasets:
  - name: toy
    grid: {n_train: [128, 256]}
algorithms: [ERM, GroupDRO]
trial_seeds: [0]
steps: 6
checkpoint_freq: 3
"""


class Parsed(HTMLParser):
    """What the checks need from a page: per <h2> section, its tables, images, links and text."""

    def __init__(self):
        super().__init__()
        self.section = ""
        self.tables: dict[str, int] = {}
        self.images: list[str] = []
        self.links: list[str] = []
        self.ids: set[str] = set()
        self.tags: set[str] = set()
        self.text: dict[str, str] = {}
        self.pre: list[str] = []
        self._in: list[str] = []

    def handle_starttag(self, tag, attrs):
        attrs = dict(attrs)
        self.tags.add(tag)
        self._in.append(tag)
        if "id" in attrs:
            self.ids.add(attrs["id"])
        if tag == "table":
            self.tables[self.section] = self.tables.get(self.section, 0) + 1
        if tag == "img":
            self._in.pop()  # a void element
            self.images.append(attrs["src"])
        if tag == "a":
            self.links.append(attrs["href"])
        if tag == "pre":
            self.pre.append("")

    def handle_endtag(self, tag):
        if self._in and self._in[-1] == tag:
            self._in.pop()

    def handle_data(self, data):
        if self._in and self._in[-1] == "h2":
            self.section = data
        self.text[self.section] = self.text.get(self.section, "") + data
        if "pre" in self._in:
            self.pre[-1] += data


def cli(*argv) -> tuple[int, str]:
    out = io.StringIO()
    with contextlib.redirect_stdout(out):
        code = main([str(a) for a in argv])
    return code, out.getvalue()


@pytest.fixture(scope="module")
def report(tmp_path_factory):
    """A real 4-run toy sweep, plus a dead run, an unfinished one and a diverged one."""
    tmp = tmp_path_factory.mktemp("report")
    (tmp / "sweep.yaml").write_text(SWEEP)
    runs = tmp / "runs"
    with pytest.MonkeyPatch.context() as mp:
        from domainbed_sc.commands import sweep

        mp.setattr(sweep, "default_launcher", lambda: ("local", "pinned by the tests"))
        assert main(["sweep", "launch", str(tmp / "sweep.yaml"), "--output-root", str(runs),
                     "--data-dir", str(tmp / "data")]) == 0
    dead = write_run(runs, [record(s, trial_seed=7, val=(0.1, 0.0), test_id=0.1, test=(0.2, 0.0))
                            for s in (1, 2)])
    unfinished = write_run(runs, [record(1, trial_seed=8, val=(0.9, 0.5), test=(0.5, 0.2))],
                           done=False)
    diverged = write_run(runs, [record(1, trial_seed=9, val=(0.9, 0.5), test=(0.5, 0.2))],
                         done=False)
    (diverged / "diverged").write_text(json.dumps({"step": 1, "losses": {"loss": None}}))
    out = tmp / "html"
    code, markdown = cli("collect", runs, "--selection", "last,oracle", "--metric", "ood_acc,wga",
                         "--html", out)
    assert code == 0
    page = Parsed()
    page.feed((out / "index.html").read_text())
    return {"runs": runs, "out": out, "page": page, "markdown": markdown, "dead": dead,
            "unfinished": unfinished, "diverged": diverged}


def finished(runs: Path) -> list[Path]:
    return sorted(p.parent for p in runs.glob(f"*/{DONE}"))


def test_every_table_of_the_text_output_is_on_the_page(report):
    page, markdown = report["page"], report["markdown"]
    text_tables = sum(line.startswith("|--") for line in markdown.splitlines())
    assert text_tables >= 2 and page.tables["Results"] == text_tables
    for line in markdown.splitlines():
        if line.startswith("| ERM") or line.startswith("| GroupDRO"):
            cells = [c.strip() for c in line.strip("|").split("|")]
            assert all(c in page.text["Results"] for c in cells)


def test_every_image_is_beside_the_page_and_every_image_written_is_shown(report):
    out, page = report["out"], report["page"]
    shown = {unquote(src) for src in page.images}
    assert all(not Path(src).is_absolute() for src in shown)
    assert all((out / src).read_bytes().startswith(b"\x89PNG") for src in shown)
    written = {p.relative_to(out).as_posix() for p in out.rglob("*.png")}
    assert shown == written
    # the sweep plots (OOD acc and WGA against n_train) and a heatmap per cell, per selection
    for method in ("last", "oracle"):
        assert {f"plots/{method}-toy-{m}-vs-n_train.png" for m in ("ood_acc", "wga")} <= shown
        assert sum(s.startswith(f"plots/{method}-") and "groups" in s for s in shown) == 5
    assert len([s for s in shown if s.startswith("curves/")]) == len(finished(report["runs"])) == 5


def test_the_page_needs_no_network_and_its_links_resolve(report):
    out, page = report["out"], report["page"]
    html = (out / "index.html").read_text()
    assert not page.tags & {"script", "link", "iframe", "object", "embed"}
    assert "http:" not in html and "https:" not in html and "url(" not in html
    for href in page.links:
        if href.startswith("#"):
            assert href[1:] in page.ids, href
        else:
            assert (out / unquote(href)).is_file(), href


def test_dead_skipped_and_diverged_runs_are_listed(report):
    text = report["page"].text
    assert text["Dead runs"].count(report["dead"].name) == 2  # under both selections
    assert all(report[k].name not in text["Dead runs"] for k in ("unfinished", "diverged"))
    assert report["unfinished"].name in text["Skipped runs"]
    assert f"{report['diverged']} (step 1)" in text["Skipped runs"]


def test_the_commands_rebuild_the_collect_call_and_every_run(report):
    page, runs = report["page"], report["runs"]
    collect = next(p for p in page.pre if "domainbed-sc collect" in p)
    assert collect.endswith(f"domainbed-sc collect {runs} --selection last,oracle "
                            f"--metric ood_acc,wga --html {report['out']}")
    train = [p for p in page.pre if "domainbed-sc train" in p]
    assert len(train) == len(finished(runs))
    for text in train:
        argv = shlex.split(text.splitlines()[-1])[1:]
        a = build_parser().parse_args(argv)
        args = RunArgs(a.dataset, a.algorithm, a.dataset_args, a.hparams, a.hparams_seed,
                       a.trial_seed, a.data_seed, a.steps, a.epochs, a.checkpoint_freq)
        first = json.loads((Path(a.output_dir) / RESULTS).read_text().splitlines()[0])
        assert args.as_dict() == first["args"]


def test_curves_use_the_records_the_collector_kept(tmp_path):
    """Another run's record and a step's second record stay off the curves, as off the tables."""
    own = [record(s, val=(0.5 + 0.1 * s, 0.2), test=(0.3, 0.1)) for s in (1, 2, 3)]
    other = record(2, trial_seed=5, val=(0.0, 0.0), test=(0.0, 0.0))
    repeat = record(2, val=(0.0, 0.0), test=(0.0, 0.0))
    not_args = {**own[1], "step": 4, "args": ["not", "arguments"]}
    run = write_run(tmp_path, [own[0], own[1], other, repeat, not_args, own[2]])
    kept = curves.run_records(run, RunArgs(**own[0]["args"]).run_id(), {1, 2, 3, 4})
    assert [r["step"] for r in kept] == [1, 2, 3]
    steps, accs = curves.series(kept, "metrics", curves.accuracy)["val"]
    assert steps == [1, 2, 3] and accs == pytest.approx([60.0, 70.0, 80.0])
