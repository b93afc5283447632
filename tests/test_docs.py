"""The README and docs/ hold together: every relative link resolves to a file of the checkout
(and its #anchor to a heading of that file, slugged as GitHub does), and every task of
`inv --list` is documented (`inv NAME` somewhere, or a row of the README's task table).
Each checker is also given a doc that is wrong on purpose, so the test can fail."""
from __future__ import annotations

import re
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
LINK = re.compile(r"!?\[(?:[^\[\]]|\[[^\]]*\])*\]\(([^)\s]+)(?:\s+\"[^\"]*\")?\)")
FENCE = re.compile(r"^(```|~~~).*?^\1[^\n]*$", re.M | re.S)
INLINE_CODE = re.compile(r"`[^`\n]*`")


def pages() -> list[Path]:
    return [ROOT / "README.md", *sorted((ROOT / "docs").glob("*.md"))]


def prose(text: str) -> str:
    """The text outside fenced code blocks (a `#` line there is a comment, not a heading)."""
    return FENCE.sub("", text)


def slug(heading: str) -> str:
    """GitHub's anchor for a heading: lower case, punctuation dropped (hyphens and underscores
    kept), each space a hyphen."""
    text = heading.strip().lower().replace("`", "")
    text = re.sub(r"[^\w\- ]", "", text)
    return text.replace(" ", "-")


def anchors(text: str) -> set[str]:
    out: set[str] = set()
    for line in prose(text).splitlines():
        found = re.match(r"^#{1,6}\s+(.*?)\s*#*\s*$", line)
        if found:
            base = slug(found.group(1))
            name, n = base, 0
            while name in out:  # GitHub numbers repeats: x, x-1, x-2
                n += 1
                name = f"{base}-{n}"
            out.add(name)
    return out


def links(text: str) -> list[str]:
    return LINK.findall(INLINE_CODE.sub("", prose(text)))


def broken_links(path: Path, text: str) -> list[str]:
    """The relative links of `text` (the content of the page at `path`) that lead nowhere."""
    bad = []
    for target in links(text):
        if re.match(r"^[a-z][a-z0-9+.-]*:", target):  # http:, https:, mailto:
            continue
        file_part, _, anchor = target.partition("#")
        if not file_part:  # an anchor of this very page
            if anchor not in anchors(text):
                bad.append(f"{target}: no heading #{anchor} in {path.relative_to(ROOT)}")
            continue
        dest = (path.parent / file_part).resolve()
        if not dest.exists():
            bad.append(f"{target}: no such file")
        elif anchor and dest.suffix == ".md" and anchor not in anchors(dest.read_text()):
            bad.append(f"{target}: no heading #{anchor} in {dest.relative_to(ROOT)}")
    return bad


def task_names() -> list[str]:
    """What `inv --list` lists: tasks.py's collection, names dashed as invoke shows them."""
    import tasks
    return sorted(ctx.name for ctx in tasks.ns.to_contexts())


def task_table(readme: str) -> set[str]:
    """The names in the first column of the README's `| task | ... |` table."""
    section = readme.split("## Tasks\n", 1)[1].split("\n## ", 1)[0]
    names = set()
    for line in section.splitlines():
        if line.startswith("| `"):
            names |= set(re.findall(r"`([a-z][a-z0-9-]*)`", line.split("|")[1]))
    return names


def undocumented(names: list[str], texts: list[str], table: set[str]) -> list[str]:
    joined = "\n".join(texts)
    return [n for n in names if n not in table and not re.search(rf"\binv {re.escape(n)}\b(?!-)", joined)]


def test_slugs_are_githubs():
    assert slug("`up` in detail") == "up-in-detail"
    assert slug("Keeping it up: `inv watch`") == "keeping-it-up-inv-watch"
    assert slug("Screening models with random weights (speed only)") == \
        "screening-models-with-random-weights-speed-only"
    assert anchors("# A\n```\n# not a heading\n```\n## A\n") == {"a", "a-1"}


def test_the_checker_finds_a_broken_link():
    fake = ROOT / "docs" / "fake.md"
    doc = ("# Fake\n[ok](../README.md#tasks) [file](security.md) [web](https://example.com) "
           "[gone](no-such-page.md) [bad anchor](../README.md#no-such-heading) [self](#fake) "
           "[self-bad](#nope) `[in code](nowhere.md)`\n```\n[fenced](nowhere.md)\n```\n")
    assert broken_links(fake, doc) == ["no-such-page.md: no such file",
                                       "../README.md#no-such-heading: no heading #no-such-heading in README.md",
                                       "#nope: no heading #nope in docs/fake.md"]


def test_every_link_of_the_readme_and_docs_resolves():
    assert (ROOT / "docs").is_dir() and len(pages()) > 5
    bad = {str(p.relative_to(ROOT)): broken_links(p, p.read_text()) for p in pages()}
    assert {k: v for k, v in bad.items() if v} == {}


def test_the_readme_links_every_docs_page():
    readme_links = {(ROOT / t.partition("#")[0]).resolve() for t in links((ROOT / "README.md").read_text())}
    unlinked = [p.name for p in pages()[1:] if p.resolve() not in readme_links]
    assert unlinked == []


def test_every_task_is_documented():
    names = task_names()
    assert {"up", "down", "sync", "bench-all", "sim-up", "install-vllm"} <= set(names)
    readme = (ROOT / "README.md").read_text()
    texts = [p.read_text() for p in pages()]
    assert undocumented(names, texts, task_table(readme)) == []


def test_the_task_check_finds_an_undocumented_task():
    table = task_table("## Tasks\n\n| task | what |\n|---|---|\n| `up` | starts |\n| `sim-up` / `sim-down` | x |\n")
    assert table == {"up", "sim-up", "sim-down"}
    assert undocumented(["up", "sim-down", "bench", "bench-all", "watch"], ["inv bench-all --resume", "inv watch"],
                        table) == ["bench"]


def missing_pages(texts: dict[str, str]) -> list[str]:
    """`docs/NAME.md` named in the given sources (help texts, hints) that do not exist."""
    return sorted({f"{where}: {name}" for where, text in texts.items()
                   for name in re.findall(r"docs/[\w-]+\.md", text) if not (ROOT / name).exists()})


def test_help_texts_and_hints_name_pages_that_exist():
    sources = {str(p.relative_to(ROOT)): p.read_text()
               for p in [ROOT / "tasks.py", *sorted((ROOT / "sparkops").rglob("*.py")),
                         *sorted((ROOT / "sparkops").rglob("*.toml"))]}
    assert any("docs/" in text for text in sources.values())
    assert missing_pages(sources) == []
    assert missing_pages({"fake.py": 'fix="see docs/no-such-page.md"'}) == ["fake.py: docs/no-such-page.md"]
