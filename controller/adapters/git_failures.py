"""What a failed git command means: its stderr's telling phrases, the errors the Build stage reports, and
the size of a commit's files.

Kept apart from `controller.adapters.git`, which runs git: this is the
vocabulary its `_classify` reads git's answer with (LC_ALL=C, lower-cased
substrings, since git has no machine-readable errors over smart HTTP).
"""
from __future__ import annotations

from collections.abc import Sequence

from controller.errors import Reason, StageFailed

# Substrings of git's stderr (lower-cased, LC_ALL=C) and what they mean.
AUTH_FAILED = (
    'authentication failed', 'could not read username', 'could not read password',
    'terminal prompts disabled', 'returned error: 401', 'returned error: 403',
    'invalid username or password', 'permission denied', 'access denied', 'bad credentials',
)
NOT_FOUND = (
    'does not appear to be a git repository', 'repository not found', 'returned error: 404',
    'not valid: is this a git repository', "' not found",
)
NETWORK = (
    'timed out', 'timeout', 'connection reset', 'connection refused', 'connection closed',
    'could not resolve host', 'temporary failure in name resolution', 'failed to connect',
    'early eof', 'rpc failed', 'unexpected disconnect', 'the remote end hung up',
    'returned error: 5', 'returned error: 429', 'ssl_error', 'gnutls', 'network is unreachable',
    'empty reply from server', 'transfer closed', 'too slow',
)
# The server will not hand out a commit by its SHA (or does not have it).
SHA_REFUSED = ('not our ref', 'unadvertised object', "couldn't find remote ref", 'no such remote ref')


class SourceNotFound(StageFailed):
    reason = Reason.SOURCE_NOT_FOUND


class RevisionNotFound(StageFailed):
    reason = Reason.REVISION_NOT_FOUND


class SourceAuthFailed(StageFailed):
    reason = Reason.SOURCE_AUTH_FAILED


class GitNotInstalled(StageFailed):
    reason = Reason.GIT_NOT_INSTALLED


class RepositoryTooLarge(StageFailed):
    reason = Reason.REPOSITORY_TOO_LARGE


def tree_bytes(listing: str) -> int:
    """What the files in `git ls-tree -r -l -z` output (`mode type object size\tpath` entries) cost checked
    out, counted as a tar counts them: each its size rounded up to 512 bytes, plus 512 (a million empty
    files are not free)."""
    total = 0
    for entry in listing.split('\0'):
        fields = entry.partition('\t')[0].split()
        if len(fields) == 4 and fields[1] == 'blob' and fields[3].isdigit():
            total += 512 + -(-int(fields[3]) // 512) * 512
    return total


def matches(text: str, needles: Sequence[str]) -> bool:
    lowered = text.lower()
    return any(needle in lowered for needle in needles)


def summary(stderr: str, *, limit: int = 300) -> str:
    """git's own lines that say what went wrong, on one line."""
    lines = [line.strip() for line in stderr.splitlines() if line.strip()]
    telling = [line for line in lines if line.lower().startswith(('fatal:', 'error:', 'remote:'))] or lines
    text = '; '.join(dict.fromkeys(telling)) or 'no error output'
    return text if len(text) <= limit else text[:limit - 1] + '…'
