"""README.md and docs/: the README's first screen, and every relative link resolving to a file and heading."""

import re

import pytest

from cifake_models.paths import REPO_ROOT
from train.results_table import markers

README = REPO_ROOT / "README.md"
PAGES = [README, *sorted((REPO_ROOT / "docs").glob("*.md"))]
LINK = re.compile(r"\]\(([^)\s]+)\)")


def _links(page):
    """Relative links of a markdown page (not web addresses), outside code blocks."""
    text = re.sub(r"```.*?```", "", page.read_text(), flags=re.S)
    return [link for link in LINK.findall(text) if not re.match(r"[a-z]+:", link)]


def _anchors(page):
    """GitHub's anchors of a page's headings: lower case, punctuation dropped, spaces to hyphens."""
    headings = re.findall(r"^#+ (.+)$", re.sub(r"```.*?```", "", page.read_text(), flags=re.S), flags=re.M)
    return {re.sub(r"[^\w\- ]", "", heading.strip().lower()).replace(" ", "-") for heading in headings}


def test_the_readme_is_short_and_its_first_screen_holds_the_essentials():
    lines = README.read_text().splitlines()
    assert len(lines) <= 250, f"README.md has {len(lines)} lines; details belong in docs/"
    first_screen = "\n".join(lines[:60])
    for needed in ["docs/screenshots/detect.png", "make app", "make test", *markers("summary")]:
        assert needed in first_screen, f"{needed!r} is not in the README's first 60 lines"


@pytest.mark.parametrize("page", PAGES, ids=lambda page: page.name)
def test_every_relative_link_names_a_file_and_heading_that_exist(page):
    broken = []
    for link in _links(page):
        path, _, anchor = link.partition("#")
        target = (page.parent / path).resolve() if path else page
        if not target.is_file():
            broken.append(f"{link} (no such file)")
        elif anchor and target.suffix == ".md" and anchor not in _anchors(target):
            broken.append(f"{link} (no such heading in {target.name})")
    assert not broken, f"{page.name} links to " + ", ".join(dict.fromkeys(broken))


def test_every_docs_page_is_linked_from_the_readme():
    linked = {(REPO_ROOT / link.partition("#")[0]).resolve() for link in _links(README)}
    for page in PAGES[1:]:
        assert page.resolve() in linked, f"README.md does not link docs/{page.name}"


def test_the_api_page_names_the_results_columns_the_code_writes():
    from cifake_models.results import COLUMNS

    assert ", ".join(COLUMNS) in " ".join((REPO_ROOT / "docs" / "api.md").read_text().split())
