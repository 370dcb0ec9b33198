"""XStoryCloze (Lin et al. 2021) for the cross-lingual task of METHOD.md: the story in language X,
the two candidate endings in English (same story id), scored as continuations of a prompt."""

from __future__ import annotations

import dataclasses
from collections.abc import Mapping, Sequence
from pathlib import Path

from lingua_jax.data.corpus import read_tsv

TSV_PATTERN = "spring2016.val.{language}.tsv.split_20_80_eval.tsv"
TSV_HEADER = (
    "InputStoryid", "InputSentence1", "InputSentence2", "InputSentence3", "InputSentence4",
    "RandomFifthSentenceQuiz1", "RandomFifthSentenceQuiz2", "AnswerRightEnding",
)
PROMPT_SUFFIX = " The ending in English:"


@dataclasses.dataclass(frozen=True)
class Story:
    """One story: four sentences in `language`, two candidate endings in `ending_language`, and
    `label`, the index (0 or 1) of the right ending."""

    story_id: str
    language: str
    sentences: tuple[str, str, str, str]
    endings: tuple[str, str]
    ending_language: str
    label: int


def _story(row: Mapping[str, str], language: str, where: str) -> Story:
    """A Story from one TSV row (fields named as in TSV_HEADER)."""
    story_id, s1, s2, s3, s4, e1, e2, answer = (row[name] for name in TSV_HEADER)
    if answer not in ("1", "2"):
        raise ValueError(f"{where}: story {story_id} has {TSV_HEADER[7]}={answer!r}, expected 1 or 2")
    return Story(story_id, language, (s1, s2, s3, s4), (e1, e2), language, int(answer) - 1)


def read_stories(path: str | Path, language: str) -> list[Story]:
    """The stories of one XStoryCloze TSV file, sentences and endings in that file's language."""
    header, rows = read_tsv(path)
    if tuple(header) != TSV_HEADER:
        raise ValueError(f"{path}: header {header} is not the XStoryCloze header {list(TSV_HEADER)}")
    return [_story(row, language, str(path)) for row in rows]


def with_english_endings(stories: Sequence[Story], english: Sequence[Story], where: str = "") -> list[Story]:
    """`stories` with their endings replaced by the English endings of the same story id.

    The two sets must have the same story ids and the same right-ending index for each story.
    """
    if not stories:
        raise ValueError(f"{where}: no stories")
    by_id = {story.story_id: story for story in english}
    ids = [story.story_id for story in stories]
    if len(set(ids)) != len(ids) or len(by_id) != len(english):
        raise ValueError(f"{where}: repeated story ids")
    only_x, only_en = set(ids) - set(by_id), set(by_id) - set(ids)
    if only_x or only_en:
        raise ValueError(
            f"{where}: story ids differ from English: {len(only_x)} only in {stories[0].language} "
            f"(e.g. {sorted(only_x)[:3]}), {len(only_en)} only in en (e.g. {sorted(only_en)[:3]})"
        )
    for story in stories:
        if story.label != by_id[story.story_id].label:
            raise ValueError(f"{where}: story {story.story_id} has a different right ending than in English")
    return [dataclasses.replace(s, endings=by_id[s.story_id].endings, ending_language="en") for s in stories]


def available_languages(directory: str | Path, pattern: str = TSV_PATTERN) -> list[str]:
    """Languages with a file named by `pattern` in `directory`."""
    prefix, suffix = pattern.split("{language}")
    names = [p.name for p in Path(directory).iterdir()]
    return sorted(n[len(prefix):-len(suffix)] for n in names if n.startswith(prefix) and n.endswith(suffix))


def load_xstorycloze(directory: str | Path, language: str, pattern: str = TSV_PATTERN) -> list[Story]:
    """Cross-lingual stories from the TSV release: sentences in `language`, English endings (from the
    English file, matched by story id), in the order of the `language` file."""
    directory = Path(directory)
    if not directory.is_dir():
        raise FileNotFoundError(f"no such directory: {directory}")
    available = available_languages(directory, pattern)
    for code in (language, "en"):
        if code not in available:
            raise ValueError(f"no XStoryCloze file for {code!r} in {directory}; available: {available}")
    path = directory / pattern.format(language=language)
    stories = read_stories(path, language)
    english = read_stories(directory / pattern.format(language="en"), "en")
    return with_english_endings(stories, english, where=str(path))


def cross_lingual_prompt(story: Story) -> tuple[str, tuple[str, str]]:
    """(context, continuations): the 4 sentences joined with spaces + " The ending in English:", and
    " " + each ending (METHOD.md, Appendix B of the paper)."""
    if story.ending_language != "en":
        raise ValueError(f"story {story.story_id} has {story.ending_language} endings, not English")
    context = " ".join(story.sentences) + PROMPT_SUFFIX
    return context, (" " + story.endings[0], " " + story.endings[1])
