"""Every repository path that the docs, configs, search spaces and code comments mention exists.

Scanned: README.md, docs/*.md, search_spaces/*, configs/*, and the comments and docstrings of the Python files
in reidmodel/, study/ and benchmarks/. Checked mentions: markdown link targets (relative to their file);
backticked or bare paths that start with a top-level folder of the repository and have a file extension or a
trailing slash (relative to the root); any ``NAME.md`` (at the root or beside the file naming it). Dataset
folders and output names ("cycles.csv") are not repository paths, and GENERATED lists the only outputs that may
be mentioned without being committed. docs/ also names functions as ``path.py::name``: those must exist too.
"""

import ast
import importlib
import io
import re
import tokenize
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parent.parent
TOP_LEVEL = ("reidmodel", "study", "benchmarks", "tests", "docs", "configs", "search_spaces", "results")
EXTENSIONS = (".py", ".md", ".yaml", ".yml", ".csv", ".png", ".json", ".toml", ".txt")
# Written by runs: the cache (ignored by git) and the folder README's main command reports to.
GENERATED = ("results/cache/", "results/ablation_rerun/")

BACKTICKED = re.compile(r"`+([^`\n]+?)`+")
LINK = re.compile(r"\]\(([^)\s]+)\)")
BARE = re.compile(rf"(?<![\w./~<-])((?:{'|'.join(TOP_LEVEL)})/[\w./*-]*)")
MARKDOWN_NAME = re.compile(r"(?<![\w./-])([\w-]+\.md)\b")
CODE_REFERENCE = re.compile(r"`([\w/]+\.py)::([\w.]+)`")


def python_prose(path: Path) -> str:
    """Comments and docstrings only: string literals in code are data, not references."""
    source = path.read_text()
    tokens = tokenize.generate_tokens(io.StringIO(source).readline)
    comments = [token.string for token in tokens if token.type == tokenize.COMMENT]
    nodes = (ast.Module, ast.ClassDef, ast.FunctionDef, ast.AsyncFunctionDef)
    docstrings = [ast.get_docstring(node) for node in ast.walk(ast.parse(source)) if isinstance(node, nodes)]
    return "\n".join(comments + [doc for doc in docstrings if doc])


def scanned() -> dict[Path, str]:
    files = [REPO / "README.md", *(REPO / "docs").glob("*.md")]
    files += [p for folder in ("search_spaces", "configs") for p in (REPO / folder).glob("*") if p.is_file()]
    texts = {path: path.read_text() for path in files}
    for folder in ("reidmodel", "study", "benchmarks"):
        texts.update({path: python_prose(path) for path in sorted((REPO / folder).rglob("*.py"))})
    return texts


def mentions(text: str) -> set[tuple[str, bool]]:
    """(path, is a markdown link) for every span that names a repository path."""
    spans = {(m, False) for m in BACKTICKED.findall(text) + BARE.findall(text) + MARKDOWN_NAME.findall(text)}
    spans |= {(m, True) for m in LINK.findall(text) if not m.startswith(("#", "mailto:"))}
    out = set()
    for raw, is_link in spans:
        path = raw.split("#")[0].split("::")[0].rstrip(".,;:)")
        if "://" in raw or not path.endswith((*EXTENSIONS, "/")):
            continue
        if is_link or (" " not in path and (path.split("/")[0] in TOP_LEVEL or MARKDOWN_NAME.fullmatch(path))):
            out.add((path, is_link))
    return out


def exists(path: str, base: Path) -> bool:
    return any(base.glob(path)) if "*" in path else (base / path).exists()


def anchors(markdown: Path) -> set[str]:
    """GitHub's heading ids: lower case, punctuation dropped, spaces to hyphens."""
    headings = re.findall(r"^#+ +(.+?) *$", markdown.read_text(), flags=re.MULTILINE)
    return {re.sub(r"[^\w\- ]", "", h.lower()).replace(" ", "-") for h in headings}


def test_every_mentioned_path_exists():
    broken = []
    for source, text in scanned().items():
        for path, is_link in sorted(mentions(text)):
            bases = [source.parent] if is_link else [REPO, source.parent] if "/" not in path else [REPO]
            template = "<" in path  # e.g. results/<name>/: a pattern, not a path
            if not template and not path.startswith(GENERATED) and not any(exists(path, base) for base in bases):
                broken.append(f"{source.relative_to(REPO)}: {path}")
    assert not broken, "mentioned but missing: " + "; ".join(broken)


def test_markdown_links_to_headings_exist():
    broken = []
    for source in [REPO / "README.md", *(REPO / "docs").glob("*.md")]:
        for target in LINK.findall(source.read_text()):
            if "#" not in target or "://" in target:
                continue
            file, anchor = target.split("#", 1)
            markdown = (source.parent / file) if file else source
            if markdown.suffix == ".md" and markdown.is_file() and anchor not in anchors(markdown):
                broken.append(f"{source.relative_to(REPO)}: {target}")
    assert not broken, "links to missing headings: " + "; ".join(broken)


@pytest.mark.parametrize("doc", sorted((REPO / "docs").glob("*.md")), ids=lambda p: p.name)
def test_functions_named_in_docs_exist(doc):
    missing = []
    for file, name in CODE_REFERENCE.findall(doc.read_text()):
        if not (REPO / file).is_file():
            missing.append(f"{file}::{name}")
            continue
        target = importlib.import_module(file.removesuffix(".py").replace("/", "."))
        for part in name.split("."):
            target = getattr(target, part, None)
        if target is None:
            missing.append(f"{file}::{name}")
    assert not missing, f"{doc.name} names code that does not exist: " + ", ".join(missing)
