"""A GitHub commit status for a run: `POST /repos/{owner}/{repo}/statuses/{sha}` (repos/create-commit-status).

A commit status rather than a GitHub Deployment: one request per transition
and nothing to remember between them (a Deployment has an id that every later
status must name, which the operator would have to keep in the resource's
status, a Kubernetes write; and creating one can be refused by the
repository's required checks). A status with the same context replaces the
previous one on that commit, so a repeat after a restart is harmless, and it
needs only the "Commit statuses: write" permission (classic scope
`repo:status`). The context names the resource, `panda-deploy/NAMESPACE/NAME`,
as Flux's GitHub provider does, so two resources deploying one commit do not
overwrite each other.

Which API a source's token may be sent to is the operator's configuration,
never the spec's: PANDA_DEPLOY_GITHUB_API (read by `controller.config`) lists
the git hosts that are GitHub and their API base URL, default
`github.com=https://api.github.com`; a host listed without `=URL` is GitHub
Enterprise Server at `https://HOST/api/v3`. The source must also be a host the
token may go to for git (PANDA_DEPLOY_GIT_HOSTS), which the preflight checks
for every source with a token.
"""
from __future__ import annotations

import dataclasses
import json
import re
import urllib.parse

from controller.adapters.post import PostFailed, judge, post
from controller.egress import DeniedNetworks, GitHost, origin_of

GITHUB_API_VARIABLE = 'PANDA_DEPLOY_GITHUB_API'
DEFAULT_GITHUB_API = 'github.com=https://api.github.com'
API_VERSION = '2022-11-28'
DESCRIPTION_LIMIT = 140  # GitHub refuses longer descriptions (422)
STATES = frozenset({'pending', 'success', 'failure', 'error'})
_SHA = re.compile(r'^[0-9a-f]{40}$')
_BASE = re.compile(r'^https?://[^\s/?#]+(/[^\s?#]*)?$')


@dataclasses.dataclass(frozen=True)
class GitHubApi:
    """One entry of PANDA_DEPLOY_GITHUB_API: a git host that is GitHub, and its REST API base URL."""
    host: GitHost
    base: str

    @classmethod
    def parse(cls, entry: str) -> GitHubApi:
        host_text, separator, base = entry.strip().partition('=')
        try:
            host = GitHost.parse(host_text)
        except ValueError:
            host = None
        if host is None or host.scheme == 'file':
            raise ValueError(f'{GITHUB_API_VARIABLE}: {host_text.strip()!r} is not a git host (host, '
                             'https://host[:port] or http://host:port)')
        if not separator:
            base = f'{host.scheme}://{host.host}{f":{host.port}" if host.port not in (None, 443, 80) else ""}/api/v3'
        base = base.strip().rstrip('/')
        if not _BASE.match(base):
            raise ValueError(f'{GITHUB_API_VARIABLE}: {base!r} is not an http(s) URL without query')
        return cls(host, base)


@dataclasses.dataclass(frozen=True)
class GitHubApis:
    """PANDA_DEPLOY_GITHUB_API: which git hosts are GitHub, and where their API answers."""
    entries: tuple[GitHubApi, ...] = ()

    @classmethod
    def parse(cls, text: str) -> GitHubApis:
        return cls(tuple(GitHubApi.parse(entry) for entry in text.split(',') if entry.strip()))

    @classmethod
    def default(cls) -> GitHubApis:
        return cls.parse(DEFAULT_GITHUB_API)

    def base_for(self, clone_url: str) -> str | None:
        """The API base URL for a repository cloned from `clone_url`, or None when its host is not listed."""
        origin = origin_of(clone_url)
        return next((entry.base for entry in self.entries if origin and entry.host.admits(origin)), None)

    def __str__(self) -> str:
        return ','.join(f'{entry.host}={entry.base}' for entry in self.entries) or 'empty'


@dataclasses.dataclass(frozen=True)
class CommitStatus:
    """What one POST sends: the state, the context, a short description and the link."""
    state: str
    context: str
    description: str
    target_url: str | None = None

    def body(self) -> dict[str, str]:
        found = {'state': self.state, 'context': self.context, 'description': _short(self.description)}
        return found | ({'target_url': self.target_url} if self.target_url else {})


@dataclasses.dataclass(frozen=True)
class CommitStatuses:
    """The commit-status client of one repository, with the token of spec.source.tokenSecretRef."""
    base: str
    owner: str
    repo: str
    token: str = dataclasses.field(repr=False)
    denied: DeniedNetworks = dataclasses.field(default_factory=DeniedNetworks.default)
    deadline: float = 10.0

    def url(self, sha: str) -> str:
        quote = urllib.parse.quote
        return f'{self.base}/repos/{quote(self.owner, safe="")}/{quote(self.repo, safe="")}/statuses/{sha}'

    def create(self, sha: str, status: CommitStatus) -> None:
        """POST the status on commit `sha`; `PostFailed` (retryable or not) when GitHub does not answer 201."""
        if not _SHA.match(sha) or status.state not in STATES:
            raise PostFailed(f'not a commit status: {status.state} on {sha[:64]!r}', retryable=False)
        headers = {'Accept': 'application/vnd.github+json', 'Authorization': f'Bearer {self.token}',
                   'X-GitHub-Api-Version': API_VERSION, 'User-Agent': 'panda-deploy',
                   'Content-Type': 'application/json'}
        answer = post(self.url(sha), body=json.dumps(status.body()).encode(), headers=headers, denied=self.denied,
                      deadline=self.deadline)
        judge(answer, what=f'commit status on {self.owner}/{self.repo}@{sha[:12]}')


def _short(text: str) -> str:
    """`text` in at most DESCRIPTION_LIMIT characters, on one line."""
    line = ' '.join(text.split())
    return line if len(line) <= DESCRIPTION_LIMIT else line[:DESCRIPTION_LIMIT - 1] + '…'
