"""One spelling of a git repository, so that a webhook's URLs match a resource's spec.

GitHub names a repository in a push event several ways (`clone_url`
https://github.com/o/r.git, `html_url`, `ssh_url` git@github.com:o/r.git,
`git_url`, `full_name` o/r) and a spec names it as `repo: o/r` or any URL.
All become `host[:port]/path`, lower case, without user-info, scheme, a
trailing slash or `.git`. A match only makes the operator ask the git server
sooner, so a false match costs a `git ls-remote`, never a wrong deploy.
"""
from __future__ import annotations

import re
import urllib.parse

_SCP_LIKE = re.compile(r'^(?:[^@/:]+@)?(?P<host>[^/:]+):(?P<path>(?!/).*)$')  # git@github.com:o/r.git
_SHORTHAND = re.compile(r'^[A-Za-z0-9_.-]+/[A-Za-z0-9_.-]+$')  # o/r: a GitHub repository


def identity(repository: str) -> str:
    """`host[:port]/path` of a git URL, an scp-like address or GitHub's owner/name."""
    text = repository.strip()
    if _SHORTHAND.match(text):
        host, path = 'github.com', text
    elif '://' in text:
        parts = urllib.parse.urlsplit(text)
        host = parts.netloc.rpartition('@')[2]
        if parts.scheme.lower() in ('https', 'http', 'ssh', 'git'):  # the default ports, written or not
            host = re.sub(r':(443|80|22|9418)$', '', host)
        path = parts.path
    elif (found := _SCP_LIKE.match(text)) is not None:
        host, path = found['host'], found['path']
    else:
        host, path = '', text  # a path on the operator's disk
    path = path.strip('/').removesuffix('.git').rstrip('/')
    return f'{host.lower()}/{path.lower()}'
