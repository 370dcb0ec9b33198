"""The Hugging Face Hub: model ids `org/name[@revision]` and dataset snapshots, through
`huggingface_hub.snapshot_download`, so the cache (HF_HOME / HF_HUB_CACHE), offline mode
(HF_HUB_OFFLINE=1) and tokens (HF_TOKEN) work as everywhere else in the HF stack. A snapshot's commit
hash is returned with its folder: reports and stage keys name the exact weights and data they read.
"""

from __future__ import annotations

import dataclasses
import re
from collections.abc import Sequence
from pathlib import Path

HUB_ID = re.compile(r"^[A-Za-z0-9][\w.-]*/[\w.-]+$")


@dataclasses.dataclass(frozen=True)
class Snapshot:
    """A repo's files at one commit: `path` is its folder in the HF cache."""

    repo_id: str
    repo_type: str
    revision: str
    commit: str
    path: Path


def split_revision(spec: str) -> tuple[str, str]:
    """"org/name@revision" -> ("org/name", "revision"); no "@" -> (spec, "")."""
    repo, _, revision = spec.partition("@")
    return repo, revision


def is_hub_id(spec: str) -> bool:
    """True for "org/name" or "org/name@revision" (a spelling, not a check that the repo exists)."""
    return bool(HUB_ID.match(split_revision(spec)[0]))


def snapshot(repo_id: str, revision: str = "", allow_patterns: Sequence[str] | None = None,
             repo_type: str = "model") -> Snapshot:
    """`snapshot_download` of the files matching `allow_patterns` (None: all) at `revision` (a branch,
    tag or commit; "" = the default branch), from the cache when offline or already there.

    Every failure says what is missing and how to get it: not cached while offline, repo or revision
    unknown, gated without access.
    """
    from huggingface_hub import constants, errors, snapshot_download
    from huggingface_hub.errors import (GatedRepoError, LocalEntryNotFoundError, RepositoryNotFoundError,
                                        RevisionNotFoundError)

    incomplete = getattr(errors, "IncompleteSnapshotError", LocalEntryNotFoundError)  # huggingface_hub >= 2

    where = f"{repo_type} {repo_id!r}" + (f" at revision {revision!r}" if revision else "")
    fetch = (f"hf download {'' if repo_type == 'model' else f'--repo-type {repo_type} '}{repo_id}"
             + (f" --revision {revision}" if revision else "")
             + "".join(f" --include '{p}'" for p in allow_patterns or ()))
    try:
        folder = snapshot_download(repo_id, repo_type=repo_type, revision=revision or None,
                                   allow_patterns=list(allow_patterns) if allow_patterns else None)
    except GatedRepoError as e:
        raise PermissionError(f"{where} is gated: accept its conditions on https://huggingface.co/"
                              f"{'' if repo_type == 'model' else 'datasets/'}{repo_id} and set HF_TOKEN "
                              f"(or run `hf auth login`)") from e
    except RevisionNotFoundError as e:
        raise FileNotFoundError(f"{where}: the revision does not exist on the Hub") from e
    except RepositoryNotFoundError as e:
        raise FileNotFoundError(f"{where} does not exist on the Hub (or is private: set HF_TOKEN), and "
                                "no local directory has that name") from e
    except (LocalEntryNotFoundError, incomplete) as e:
        why = ("HF_HUB_OFFLINE is set" if constants.HF_HUB_OFFLINE
               else "the Hub cannot be reached from here")
        raise FileNotFoundError(
            f"{where} is not (completely) in the Hugging Face cache {constants.HF_HUB_CACHE} and {why}. "
            f"Where there is a network, with the same HF_HOME, run: {fetch}; or give a local directory "
            f"instead of the hub id") from e
    path = Path(folder)
    return Snapshot(repo_id, repo_type, revision or "main", path.name, path)
