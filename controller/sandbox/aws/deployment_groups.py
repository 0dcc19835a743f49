"""ECS deployment groups: moto keeps them; the sandbox refuses what AWS refuses and finds them for a deployment."""
from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from controller.sandbox.aws.backends import MotoBackends
from controller.sandbox.aws.deployment_configs import ECS_DEPLOYMENT_CONFIGS
from controller.sandbox.aws.exceptions import CodeDeployError


def ecs_deployment_group(moto: MotoBackends, *, application_name: str, group_name: str) -> Any:
    """The ECS deployment group from moto's backend (its exceptions turned into ours)."""
    application = moto.codedeploy.applications.get(application_name)
    if application is None:
        raise CodeDeployError('ApplicationDoesNotExistException',
                              f'The application {application_name} does not exist with the user or AWS account.')
    group = moto.codedeploy.deployment_groups.get(application_name, {}).get(group_name)
    if group is None:
        raise CodeDeployError('DeploymentGroupDoesNotExistException',
                              f'The deployment group {group_name} does not exist with the user or AWS account.')
    if application.compute_platform != 'ECS':
        raise CodeDeployError('InvalidComputePlatformException',
                              f'The application {application_name} is not an ECS application.')
    return group


def check_ecs_deployment_group(moto: MotoBackends, request: Mapping[str, Any]) -> None:
    """CreateDeploymentGroup for an ECS application: refuse what AWS refuses, before moto stores it."""
    _check_style_and_config(request)
    _check_service(moto, request.get('ecsServices') or [])
    pairs = (request.get('loadBalancerInfo') or {}).get('targetGroupPairInfoList') or []
    if len(pairs) != 1:
        raise CodeDeployError('InvalidLoadBalancerInfoException',
                              'An ECS deployment group needs loadBalancerInfo.targetGroupPairInfoList with '
                              'exactly one target group pair.')
    _check_target_group_pair(moto, pairs[0])
    _check_blue_green(request.get('blueGreenDeploymentConfiguration') or {})


def _check_style_and_config(request: Mapping[str, Any]) -> None:
    style = request.get('deploymentStyle') or {}
    if (style.get('deploymentType'), style.get('deploymentOption')) != ('BLUE_GREEN', 'WITH_TRAFFIC_CONTROL'):
        raise CodeDeployError('InvalidDeploymentStyleException',
                              'An ECS deployment group needs deploymentStyle BLUE_GREEN with '
                              'WITH_TRAFFIC_CONTROL.')
    config_name = request.get('deploymentConfigName')
    if config_name and config_name not in ECS_DEPLOYMENT_CONFIGS:
        raise CodeDeployError('DeploymentConfigDoesNotExistException',
                              f'The deployment configuration {config_name} does not exist with the user or AWS '
                              f'account.')


def _check_service(moto: MotoBackends, services: list[dict[str, Any]]) -> None:
    """One ECS service, active, deployed by CodeDeploy."""
    if len(services) != 1 or not services[0].get('serviceName') or not services[0].get('clusterName'):
        raise CodeDeployError('InvalidECSServiceException',
                              'An ECS deployment group needs exactly one ecsServices entry with serviceName and '
                              'clusterName.')
    service = moto.service(cluster=services[0]['clusterName'], service=services[0]['serviceName'])
    if service is None or service.status != 'ACTIVE':
        raise CodeDeployError('InvalidECSServiceException',
                              f'The ECS service {services[0]["serviceName"]} in cluster '
                              f'{services[0]["clusterName"]} does not exist.')
    if (service.deployment_controller or {}).get('type') != 'CODE_DEPLOY':
        raise CodeDeployError('InvalidECSServiceException',
                              f'The ECS service {service.name} must use the CODE_DEPLOY deployment controller.')


def _check_target_group_pair(moto: MotoBackends, pair: Mapping[str, Any]) -> None:
    """Two different existing target groups, one production listener and at most one test listener."""
    names = [tg.get('name') for tg in pair.get('targetGroups') or []]
    if len(names) != 2 or len(set(names)) != 2:
        raise CodeDeployError('InvalidTargetGroupPairException',
                              'A target group pair needs two different target groups.')
    for name in names:
        if not name or moto.target_group_arn(name) is None:
            raise CodeDeployError('InvalidTargetGroupPairException', f'The target group {name} does not exist.')
    for route in ('prodTrafficRoute', 'testTrafficRoute'):
        arns = (pair.get(route) or {}).get('listenerArns') or []
        if route == 'prodTrafficRoute' and len(arns) != 1 or len(arns) > 1:
            raise CodeDeployError('InvalidTargetGroupPairException',
                                  f'{route} needs {"exactly" if route == "prodTrafficRoute" else "at most"} '
                                  f'one listener ARN.')
        for arn in arns:
            if moto.listener(arn) is None:
                raise CodeDeployError('InvalidTargetGroupPairException', f'The listener {arn} does not exist.')


def _check_blue_green(blue_green: Mapping[str, Any]) -> None:
    ready = blue_green.get('deploymentReadyOption') or {}
    if ready.get('actionOnTimeout', 'CONTINUE_DEPLOYMENT') not in ('CONTINUE_DEPLOYMENT', 'STOP_DEPLOYMENT'):
        raise CodeDeployError('InvalidBlueGreenDeploymentConfigurationException',
                              f'actionOnTimeout {ready.get("actionOnTimeout")} is not valid.')
    terminate = blue_green.get('terminateBlueInstancesOnDeploymentSuccess') or {}
    if terminate.get('action', 'TERMINATE') not in ('TERMINATE', 'KEEP_ALIVE'):
        raise CodeDeployError('InvalidBlueGreenDeploymentConfigurationException',
                              f'terminateBlueInstancesOnDeploymentSuccess.action {terminate.get("action")} is '
                              f'not valid.')
