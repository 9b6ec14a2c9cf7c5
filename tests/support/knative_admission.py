"""What Knative Serving admits: a Service checked as its API server (the CRD's schema, which also
prunes unknown fields) and its webhook (field masks and validation, default config-features)
would check it.

The rules are Knative's, as of knative/serving tag knative-v1.23.0:
  pkg/apis/serving/fieldmask.go        PodSpecMask, ContainerMask, SecurityContextMask,
                                       PodSecurityContextMask, CapabilitiesMask, ProbeMask,
                                       HTTPGetActionMask, ContainerPortMask, EnvVarMask,
                                       EnvVarSourceMask, VolumeMask, VolumeSourceMask, VolumeMountMask
  pkg/apis/config/features.go          defaultFeaturesConfig (which of those fields are gated, and off)
  pkg/apis/serving/k8s_validation.go   reservedPaths, reservedContainerNames, reservedEnvVars,
                                       reservedPorts, validPortNames, ValidateVolumes,
                                       validateVolumeMounts, validateProbe, validateReadinessProbe
  pkg/apis/serving/v1/revision_validation.go + pkg/apis/config/defaults.go
                                       timeoutSeconds <= 600, containerConcurrency <= 1000
  pkg/apis/autoscaling/register.go + annotation_validation.go
                                       autoscaling.knative.dev/* keys and values
  pkg/networking/constants.go          8012, 8013, 8022, 9090, 9091 (and 8008, pprof)
  config/core/300-resources/service.yaml  the CRD (tests/support/knative/)
`admission_errors(service, features)` returns what would be refused, [] when it is admitted.
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Mapping
from functools import cache
from pathlib import Path
from typing import Any

import jsonschema
import yaml

RELEASE = "knative-v1.23.0"
CRD = Path(__file__).parent / "knative" / f"service-crd-{RELEASE.removeprefix('knative-')}.yaml"

# PodSpecMask: always allowed, and each gated field with the config-features flag that allows it.
POD_FIELDS = {"serviceAccountName", "containers", "volumes", "imagePullSecrets", "enableServiceLinks",
              "automountServiceAccountToken"}  # fmt: skip
GATED_POD_FIELDS = {
    "affinity": "kubernetes.podspec-affinity",
    "topologySpreadConstraints": "kubernetes.podspec-topologyspreadconstraints",
    "hostAliases": "kubernetes.podspec-hostaliases",
    "nodeSelector": "kubernetes.podspec-nodeselector",
    "runtimeClassName": "kubernetes.podspec-runtimeclassname",
    "tolerations": "kubernetes.podspec-tolerations",
    "securityContext": "kubernetes.podspec-securitycontext",
    "shareProcessNamespace": "kubernetes.podspec-shareprocessnamespace",
    "priorityClassName": "kubernetes.podspec-priorityclassname",
    "schedulerName": "kubernetes.podspec-schedulername",
    "initContainers": "kubernetes.podspec-init-containers",
    "dnsPolicy": "kubernetes.podspec-dnspolicy",
    "dnsConfig": "kubernetes.podspec-dnsconfig",
    "hostIPC": "kubernetes.podspec-hostipc",
    "hostPID": "kubernetes.podspec-hostpid",
    "hostNetwork": "kubernetes.podspec-hostnetwork",
}
# RevisionSpec's own fields beside the inlined PodSpec.
REVISION_FIELDS = {"containerConcurrency", "timeoutSeconds", "responseStartTimeoutSeconds", "idleTimeoutSeconds"}
CONTAINER_FIELDS = {"name", "args", "command", "env", "workingDir", "envFrom", "image", "imagePullPolicy",
                    "livenessProbe", "ports", "readinessProbe", "resources", "securityContext", "startupProbe",
                    "terminationMessagePath", "terminationMessagePolicy", "volumeMounts"}  # fmt: skip
SECURITY_CONTEXT_FIELDS = {"capabilities", "readOnlyRootFilesystem", "runAsUser", "runAsGroup", "runAsNonRoot",
                           "allowPrivilegeEscalation", "seccompProfile", "privileged"}  # fmt: skip
POD_SECURITY_CONTEXT_FIELDS = {"runAsUser", "runAsGroup", "runAsNonRoot", "fsGroup", "supplementalGroups",
                               "seccompProfile"}  # fmt: skip
PROBE_FIELDS = {"httpGet", "tcpSocket", "exec", "grpc", "initialDelaySeconds", "timeoutSeconds", "periodSeconds",
                "successThreshold", "failureThreshold", "terminationGracePeriodSeconds"}  # fmt: skip
HTTP_GET_FIELDS = {"host", "path", "scheme", "httpHeaders", "port"}
PORT_FIELDS = {"containerPort", "name", "protocol"}
ENV_FIELDS = {"name", "value", "valueFrom"}
ENV_SOURCE_FIELDS = {"configMapKeyRef", "secretKeyRef"}  # fieldRef, resourceFieldRef: kubernetes.podspec-fieldref
VOLUME_SOURCES = {"secret", "configMap", "projected", "emptyDir"}  # emptyDir is Enabled by default
MOUNT_FIELDS = {"name", "readOnly", "mountPath", "subPath"}
RESERVED_PATHS = {"/", "/dev", "/dev/log"}  # releases before knative-v1.14.0 also reserved /tmp, /var, /var/log
RESERVED_CONTAINER_NAMES = {"queue-proxy"}
RESERVED_ENV = {"PORT", "K_SERVICE", "K_CONFIGURATION", "K_REVISION"}
RESERVED_PORTS = {8012, 8013, 8022, 9090, 9091, 8008}
PORT_NAMES = {"", "http1", "h2c"}
MAX_TIMEOUT_SECONDS = 600  # config-defaults max-revision-timeout-seconds
MAX_CONTAINER_CONCURRENCY = 1000  # config-defaults container-concurrency-max-limit
KPA, HPA = "kpa.autoscaling.knative.dev", "hpa.autoscaling.knative.dev"
AUTOSCALING_KEYS = {f"autoscaling.knative.dev/{k}" for k in (
    "class", "min-scale", "max-scale", "initial-scale", "scale-down-delay", "metric", "target",
    "scale-to-zero-pod-retention-period", "metric-aggregation-algorithm", "window",
    "target-utilization-percentage", "target-burst-capacity", "panic-window-percentage",
    "panic-threshold-percentage", "activation-scale")}  # fmt: skip
INT32_MAX = 2**31 - 1
_DNS1035 = re.compile(r"^[a-z]([-a-z0-9]*[a-z0-9])?$")
_DURATION = re.compile(r"^([0-9]+)(s|m|h)$")


def admission_errors(service: Mapping[str, Any], features: Iterable[str] = ()) -> list[str]:
    """Why Knative would refuse `service` (a serving.knative.dev/v1 Service) with the given
    config-features flags Enabled and every other flag at its default; [] if it admits it."""
    enabled = set(features)
    errors = schema_errors(service)
    meta, template = service.get("metadata", {}), service.get("spec", {}).get("template", {})
    name = meta.get("name", "")
    if not _DNS1035.match(name) or len(f"{name}-00001") > 63:
        errors.append(f"metadata.name {name!r}: a DNS-1035 label whose revision name ({name}-00001) fits 63")
    if any(k in AUTOSCALING_KEYS for k in meta.get("annotations", {})):
        errors.append("metadata.annotations: autoscaling annotations belong on spec.template")
    errors += _annotations(template.get("metadata", {}).get("annotations", {}))
    errors += _revision(template.get("spec", {}), enabled)
    return errors


def schema_errors(service: Mapping[str, Any]) -> list[str]:
    validator = jsonschema.Draft202012Validator(_schema())
    return [f"schema: {'.'.join(map(str, e.absolute_path))}: {e.message}" for e in validator.iter_errors(service)]


@cache
def _schema() -> dict[str, Any]:
    from tests.support.validation import structural_json_schema

    crd = yaml.safe_load(CRD.read_text())
    version = next(v for v in crd["spec"]["versions"] if v["name"] == "v1")
    schema = structural_json_schema(version["schema"]["openAPIV3Schema"])
    schema["properties"].update({"apiVersion": {"const": "serving.knative.dev/v1"}, "kind": {"const": "Service"},
                                 "metadata": {"type": "object"}})  # fmt: skip
    return schema


def _disallowed(where: str, data: Mapping[str, Any], allowed: set[str]) -> list[str]:
    return [f"{where}: must not set the field(s): {key}" for key in sorted(set(data) - allowed)]


def _revision(spec: Mapping[str, Any], enabled: set[str]) -> list[str]:
    allowed = POD_FIELDS | REVISION_FIELDS | {f for f, flag in GATED_POD_FIELDS.items() if flag in enabled}
    errors = _disallowed("spec.template.spec", spec, allowed)
    if spec.get("automountServiceAccountToken") is True:
        errors.append("spec.template.spec.automountServiceAccountToken: only false may be set")
    if "securityContext" in spec and "kubernetes.podspec-securitycontext" in enabled:
        errors += _disallowed("spec.template.spec.securityContext", spec["securityContext"],
                              POD_SECURITY_CONTEXT_FIELDS)  # fmt: skip
    timeout = spec.get("timeoutSeconds")
    if timeout is not None and not 0 <= timeout <= MAX_TIMEOUT_SECONDS:
        errors.append(f"spec.template.spec.timeoutSeconds: {timeout} outside [0, {MAX_TIMEOUT_SECONDS}]")
    concurrency = spec.get("containerConcurrency")
    if concurrency is not None and not 0 <= concurrency <= MAX_CONTAINER_CONCURRENCY:
        errors.append(
            f"spec.template.spec.containerConcurrency: {concurrency} outside [0, {MAX_CONTAINER_CONCURRENCY}]"
        )
    containers = spec.get("containers", [])
    volumes = {v.get("name"): v for v in spec.get("volumes", [])}
    mounted = {m.get("name") for c in containers for m in c.get("volumeMounts", [])}
    for name, volume in volumes.items():
        where = f"spec.template.spec.volumes[{name}]"
        if name not in mounted:
            errors.append(f"{where}: volume with name {name!r} not mounted")
        sources = set(volume) - {"name"}
        errors += [f"{where}: {s} volumes are disabled" for s in sorted(sources - VOLUME_SOURCES)]
        if len(sources) != 1:
            errors.append(f"{where}: expected exactly one volume source, got {sorted(sources)}")
        medium = (volume.get("emptyDir") or {}).get("medium", "")
        if medium not in ("", "Memory"):
            errors.append(f"{where}.emptyDir.medium: {medium!r}")
    ports = [p for c in containers for p in c.get("ports", [])]
    if len(ports) > 1:
        errors.append("spec.template.spec.containers[*].ports: only a single port is allowed across all containers")
    port_name = ports[0].get("name", "") if ports else ""
    for i, container in enumerate(containers):
        errors += _container(f"spec.template.spec.containers[{i}]", container, volumes, port_name or "http")
    return errors


def _container(where: str, container: Mapping[str, Any], volumes: Mapping[str, Any], port_name: str) -> list[str]:
    errors = _disallowed(where, container, CONTAINER_FIELDS)
    if container.get("name") in RESERVED_CONTAINER_NAMES:
        errors.append(f"{where}.name: {container['name']!r} is a reserved container name")
    if not container.get("image"):
        errors.append(f"{where}.image: missing")
    for env in container.get("env", []):
        errors += _disallowed(f"{where}.env[{env.get('name')}]", env, ENV_FIELDS)
        errors += _disallowed(f"{where}.env[{env.get('name')}].valueFrom", env.get("valueFrom", {}), ENV_SOURCE_FIELDS)
        if env.get("name") in RESERVED_ENV:
            errors.append(f"{where}.env: {env['name']!r} is a reserved environment variable")
    for port in container.get("ports", [])[:1]:  # the user port
        errors += _disallowed(f"{where}.ports[0]", port, PORT_FIELDS)
        if port.get("name", "") not in PORT_NAMES:
            errors.append(f"{where}.ports[0].name: {port['name']!r}; must be empty, or one of: 'h2c', 'http1'")
        if port.get("protocol", "TCP") != "TCP":
            errors.append(f"{where}.ports[0].protocol: {port['protocol']!r}")
        if port.get("containerPort") in RESERVED_PORTS:
            errors.append(f"{where}.ports[0].containerPort: {port['containerPort']} is a reserved port")
    security = container.get("securityContext")
    if security is not None:
        errors += _disallowed(f"{where}.securityContext", security, SECURITY_CONTEXT_FIELDS)
        errors += _disallowed(f"{where}.securityContext.capabilities", security.get("capabilities", {}), {"drop"})
        if security.get("privileged") is True:
            errors.append(f"{where}.securityContext.privileged: only false may be set")
    for kind in ("livenessProbe", "readinessProbe", "startupProbe"):
        if kind in container:
            errors += _probe(f"{where}.{kind}", container[kind], port_name, kind == "readinessProbe")
    for mount in container.get("volumeMounts", []):
        at = f"{where}.volumeMounts[{mount.get('name')}]"
        errors += _disallowed(at, mount, MOUNT_FIELDS)
        volume = volumes.get(mount.get("name"))
        path = str(mount.get("mountPath", ""))
        if volume is None:
            errors.append(f"{at}: volumeMount has no matching volume")
        if path.rstrip("/") in RESERVED_PATHS or path == "/":
            errors.append(f"{at}.mountPath: {path!r} is a reserved path")
        if not path.startswith("/"):
            errors.append(f"{at}.mountPath: {path!r} is not absolute")
        if volume is not None and "emptyDir" not in volume and not mount.get("readOnly"):
            errors.append(f"{at}.readOnly: volume mount should be readOnly for this type of volume")
    return errors


def _probe(where: str, probe: Mapping[str, Any], port_name: str, readiness: bool) -> list[str]:
    errors = _disallowed(where, probe, PROBE_FIELDS)
    handlers = [h for h in ("httpGet", "tcpSocket", "exec", "grpc") if h in probe]
    if len(handlers) != 1:
        errors.append(f"{where}: expected exactly one of httpGet, tcpSocket, exec, grpc")
    http = probe.get("httpGet")
    if http is not None:
        errors += _disallowed(f"{where}.httpGet", http, HTTP_GET_FIELDS)
        port = http.get("port")
        if isinstance(port, str) and port != port_name:
            errors.append(f"{where}.httpGet.port: {port!r}: probe port must match container port")
    if readiness and probe.get("periodSeconds", 0) > 0:
        if probe.get("timeoutSeconds", 1) < 1 or probe.get("failureThreshold", 3) < 1:
            errors.append(f"{where}: timeoutSeconds and failureThreshold must be at least 1")
    return errors


def _annotations(annotations: Mapping[str, str]) -> list[str]:
    where = "spec.template.metadata.annotations"
    errors = [f"{where}: unknown key {k}" for k in annotations
              if k.startswith("autoscaling.knative.dev/") and k not in AUTOSCALING_KEYS]  # fmt: skip
    get = lambda key: annotations.get(f"autoscaling.knative.dev/{key}")  # noqa: E731
    scales = {}
    for key in ("min-scale", "max-scale", "initial-scale"):
        raw = get(key)
        if raw is not None:
            if not re.fullmatch(r"[0-9]+", raw) or int(raw) > INT32_MAX:
                errors.append(f"{where}: {key} {raw!r} is not an int32 >= 0")
            else:
                scales[key] = int(raw)
    low, high = scales.get("min-scale", 0), scales.get("max-scale", 0)
    if high and high < low:
        errors.append(f"{where}: max-scale={high} is less than min-scale={low}")
    if scales.get("initial-scale") == 0:
        errors.append(f"{where}: initial-scale=0 not allowed by cluster (allow-zero-initial-scale is false)")
    klass = get("class") or KPA
    if klass.endswith(".knative.dev") and klass not in (KPA, HPA):
        errors.append(f"{where}: class {klass!r}")
    metric = get("metric")
    if metric is not None and (
        (klass == KPA and metric not in ("concurrency", "rps")) or (klass == HPA and not metric)
    ):
        errors.append(f"{where}: metric {metric!r} with class {klass}")
    target = get("target")
    if target is not None:
        try:
            if float(target) < 0.01:
                errors.append(f"{where}: target {target} should be at least 0.01")
        except ValueError:
            errors.append(f"{where}: target {target!r}")
    delay = get("scale-down-delay")
    if delay is not None:
        match = _DURATION.match(delay)
        seconds = int(match.group(1)) * {"s": 1, "m": 60, "h": 3600}[match.group(2)] if match else None
        if seconds is None or seconds > 3600:
            errors.append(f"{where}: scale-down-delay {delay!r} (at most 1h, in whole seconds)")
    return errors
