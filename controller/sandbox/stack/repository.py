"""The sample app's source repository: `examples/sample-app` as git, served by file:// URL."""
from __future__ import annotations

import os
import pathlib
import shutil
import subprocess

from controller.sandbox.stack import ROOT


class SampleRepository:
    """examples/sample-app as a git repository served by file:// URL; each version is one commit.

    Author, committer and dates are fixed, so the same versions have the same
    commit SHAs on every machine and every run (and so the same image tags).
    """

    def __init__(self, root: pathlib.Path) -> None:
        self.work = root / 'work'
        self.bare = root / 'your-org' / 'sample-app.git'  # owner/name -> ECR repository your-org-sample-app
        shutil.copytree(ROOT / 'examples' / 'sample-app', self.work)
        self._git('init', '-q', '-b', 'main', '.')
        self._git('init', '-q', '--bare', '-b', 'main', str(self.bare))
        self._page = (self.work / 'www' / 'index.html').read_text()

    @property
    def url(self) -> str:
        return self.bare.as_uri()

    def commit(self, version: int, *, change: str = '') -> tuple[str, str]:
        """Commit version `version` of the app (its page says so), with what else changed in the work tree
        described by `change` in the subject, to main and push; (sha, subject)."""
        if version > 1:
            (self.work / 'www' / 'index.html').write_text(self._page.replace('</h1>', f' (v{version})</h1>'))
        subject = f'Sample app v{version}' + (f' ({change})' if change else '')
        when = f'2025-01-{version:02d}T12:00:00+00:00'
        self._git('add', '-A')
        self._git('commit', '-q', '-m', subject, env={'GIT_AUTHOR_DATE': when, 'GIT_COMMITTER_DATE': when})
        self._git('push', '-q', str(self.bare), 'main')
        return self._git('rev-parse', 'HEAD'), subject

    def _git(self, *args: str, env: dict[str, str] | None = None) -> str:
        environment = {**os.environ, 'GIT_CONFIG_GLOBAL': os.devnull, 'GIT_CONFIG_NOSYSTEM': '1',
                       'GIT_AUTHOR_NAME': 'Panda Demo', 'GIT_AUTHOR_EMAIL': 'demo@panda.invalid',
                       'GIT_COMMITTER_NAME': 'Panda Demo', 'GIT_COMMITTER_EMAIL': 'demo@panda.invalid', **(env or {})}
        done = subprocess.run(['git', '-C', str(self.work), *args], env=environment, check=True,
                              capture_output=True, text=True)
        return done.stdout.strip()
