"""The sample's Secrets and PandaDeploy: `examples/` filled in for the sandbox."""
from __future__ import annotations

import copy
from typing import Any

import yaml

from controller.sandbox.stack import ROOT
from controller.sandbox.stack.world import AwsWorld

NAMESPACE, NAME = 'default', 'sample-app'
SANDBOX_KEYS = {'accessKeyId': 'PANDADEMOACCESSKEY00', 'secretAccessKey': 'panda-demo-not-a-real-secret'}


def demo_manifests(*, repo_url: str, base_image: str, world: AwsWorld) -> tuple[list[dict[str, Any]], dict[str, Any]]:
    """(Secrets, PandaDeploy) from examples/, filled in for the sandbox."""
    secrets = [doc for doc in yaml.safe_load_all((ROOT / 'examples' / 'secrets.yaml').read_text()) if doc]
    for secret in secrets:
        if secret['metadata']['name'] == 'aws-creds':
            secret['stringData'] = dict(SANDBOX_KEYS)
        else:  # a GitHub token: a file:// repository needs none, but the sample refers to the Secret
            secret['stringData'] = {'token': 'not-needed-for-a-file-url'}
    resource = yaml.safe_load((ROOT / 'examples' / 'pandadeploy.yaml').read_text())
    spec = copy.deepcopy(resource['spec'])
    spec['source'] = {'url': repo_url, 'branch': 'main', 'tokenSecretRef': spec['source']['tokenSecretRef'],
                      'buildArgs': {'BASE_IMAGE': base_image}}
    spec['ecs'].update(cluster=world.cluster, service=world.service, desiredCount=1)
    spec['blueGreen']['codeDeploy']['serviceRoleArn'] = world.role_arn
    spec['blueGreen']['hooks'] = {'beforeAllowTraffic': f'{world.service}-before-allow-traffic',
                                  'afterAllowTraffic': f'{world.service}-after-allow-traffic'}
    spec['blueGreen']['loadBalancer'] = {
        'productionListenerArn': world.production_listener_arn, 'testListenerArn': world.test_listener_arn,
        'blueTargetGroupArn': world.blue_target_group_arn, 'greenTargetGroupArn': world.green_target_group_arn}
    spec['healthCheck'].update(intervalSeconds=1)
    spec['timeouts'] = {'stageSeconds': '2m', 'totalSeconds': '5m'}
    resource['spec'] = spec
    return secrets, resource
