#!/usr/bin/env python3
"""Offline checks of one `helm template` rendering of the identify-connector chart.

Used by scripts/helm-check.sh (run it with the kubernetes-validate venv's
python). For the rendered manifests it checks:

* every manifest against the Kubernetes OpenAPI schemas of a fixed Kubernetes
  version with kubernetes-validate (strict: unknown fields are errors); a kind
  without a schema is an error, except the ServiceMonitor and KEDA
  ScaledObject CRDs, which get their own structural checks here;
* the rendered config.toml parses, equals the `config` values the chart was
  given (chart defaults deep-merged with the values files, Helm style: null
  removes a key) or the raw configToml, and matches the config part of
  values.schema.json;
* the wiring between the objects (selectors, ports, probes, the config mount,
  the store volume and its source, the API key Secret, the static membership
  environment, the security context, the grace period, the workload kind and
  its headless Service, the autoscaler's target) and that the values that
  should reach the pod spec did.

Exit status 0 when every check passes, 1 otherwise.
"""

import argparse
import copy
import json
import os
import posixpath
import re
import sys
import tomllib
import urllib.parse

import jsonschema
import kubernetes_validate
import yaml

CONFIG_DIR = "/etc/identify-connector"
CONFIG_FILE = CONFIG_DIR + "/config.toml"
STORE_DIR = "/var/lib/identify-connector"
# The image sets no WORKDIR: a relative cache.dir is relative to /.
WORKING_DIR = "/"
INSTANCE_ID_ENV = "IDENTIFY_KAFKA__INSTANCE_ID"
HEADLESS_LABEL = "identify-connector/headless"
CRD_KINDS = {("monitoring.coreos.com/v1", "ServiceMonitor"), ("keda.sh/v1alpha1", "ScaledObject")}
SCALEDOBJECT_SPEC_KEYS = {
    "scaleTargetRef", "pollingInterval", "cooldownPeriod", "initialCooldownPeriod", "idleReplicaCount",
    "minReplicaCount", "maxReplicaCount", "fallback", "advanced", "triggers",
}
SCALEDOBJECT_TRIGGER_KEYS = {"type", "name", "metadata", "authenticationRef", "metricType", "useCachedMetrics"}
# Metadata of KEDA's kafka scaler (keda.sh/docs/scalers/apache-kafka).
KEDA_KAFKA_METADATA_KEYS = {
    "bootstrapServers", "consumerGroup", "topic", "partitionLimitation", "lagThreshold",
    "activationLagThreshold", "offsetResetPolicy", "allowIdleConsumers", "excludePersistentLag",
    "scaleToZeroOnInvalidOffset", "limitToPartitionsWithLag", "ensureEvenDistributionOfPartitions",
    "version", "sasl", "tls", "unsafeSsl",
}
SERVICEMONITOR_ENDPOINT_KEYS = {
    "port", "path", "scheme", "interval", "scrapeTimeout", "relabelings",
    "metricRelabelings", "honorLabels", "tlsConfig", "bearerTokenSecret",
    "authorization", "basicAuth", "params", "targetPort", "followRedirects",
}
SERVICEMONITOR_SPEC_KEYS = {
    "jobLabel", "namespaceSelector", "selector", "endpoints", "targetLabels",
    "podTargetLabels", "sampleLimit", "attachMetadata",
}
PROM_DURATION = re.compile(r"^(([0-9]+)y)?(([0-9]+)w)?(([0-9]+)d)?(([0-9]+)h)?(([0-9]+)m)?(([0-9]+)s)?(([0-9]+)ms)?$")
# humantime 2.4 (src/duration.rs): the units parse_duration accepts.
HUMANTIME_UNITS = {
    "nanos": 1e-9, "ns": 1e-9, "nsec": 1e-9, "us": 1e-6, "usec": 1e-6, "µs": 1e-6,
    "millis": 1e-3, "ms": 1e-3, "msec": 1e-3,
    "s": 1, "sec": 1, "secs": 1, "second": 1, "seconds": 1,
    "m": 60, "min": 60, "mins": 60, "minute": 60, "minutes": 60,
    "h": 3600, "hr": 3600, "hrs": 3600, "hour": 3600, "hours": 3600,
    "d": 86400, "day": 86400, "days": 86400,
    "w": 604800, "wk": 604800, "wks": 604800, "week": 604800, "weeks": 604800,
    "M": 2630016, "month": 2630016, "months": 2630016,
    "y": 31557600, "yr": 31557600, "yrs": 31557600, "year": 31557600, "years": 31557600,
}


class Checker:
    def __init__(self, combo):
        self.combo = combo
        self.failures = []
        self.passed = 0

    def check(self, ok, what):
        if ok:
            self.passed += 1
        else:
            self.failures.append(what)
        return ok


def coalesce(base, override):
    """Helm's merge of a values file over the chart defaults."""
    out = copy.deepcopy(base)
    for key, value in (override or {}).items():
        if value is None:
            out.pop(key, None)
        elif isinstance(value, dict) and isinstance(out.get(key), dict):
            out[key] = coalesce(out[key], value)
        else:
            out[key] = copy.deepcopy(value)
    return out


def strip_nulls(value):
    if isinstance(value, dict):
        return {k: strip_nulls(v) for k, v in value.items() if v is not None}
    return value


def humantime_seconds(value):
    """Seconds of a config duration: a humantime string or an integer of seconds."""
    if isinstance(value, int) and not isinstance(value, bool):
        return value
    parts = re.findall(r"([0-9]+(?:\.[0-9]+)?)\s*([a-zA-Zµ]+)", str(value))
    if (not parts or re.sub(r"[0-9]+(?:\.[0-9]+)?\s*[a-zA-Zµ]+|\s", "", str(value))
            or any(u not in HUMANTIME_UNITS for _, u in parts)):
        raise ValueError("not a humantime duration: %r" % (value,))
    return sum(float(n) * HUMANTIME_UNITS[u] for n, u in parts)


def ingress_path_matches(rule_path, path_type, request_path):
    """Kubernetes Ingress path matching (ImplementationSpecific read as Prefix)."""
    if path_type == "Exact":
        return request_path == rule_path
    prefix = rule_path.rstrip("/")
    return prefix == "" or request_path == prefix or request_path.startswith(prefix + "/")


def subset(small, big):
    return all(big.get(k) == v for k, v in (small or {}).items())


def selects(selector, labels):
    """A Kubernetes LabelSelector (matchLabels and matchExpressions) matches labels."""
    selector = selector or {}
    for expr in selector.get("matchExpressions") or []:
        key, op, vals = expr["key"], expr["operator"], expr.get("values") or []
        if ((op == "In" and labels.get(key) not in vals) or (op == "NotIn" and labels.get(key) in vals)
                or (op == "Exists" and key not in labels) or (op == "DoesNotExist" and key in labels)):
            return False
    return subset(selector.get("matchLabels"), labels)


def main():  # noqa: C901 (one linear list of checks)
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--chart", required=True)
    ap.add_argument("--combo", required=True)
    ap.add_argument("--manifest", required=True)
    ap.add_argument("--values", action="append", default=[])
    ap.add_argument("--namespace", required=True)
    ap.add_argument("--kube-version", required=True)
    ap.add_argument("--config-out", default="")
    args = ap.parse_args()

    c = Checker(args.combo)
    with open(os.path.join(args.chart, "values.yaml")) as f:
        values = yaml.safe_load(f)
    for path in args.values:
        with open(path) as f:
            values = coalesce(values, yaml.safe_load(f))
    with open(os.path.join(args.chart, "Chart.yaml")) as f:
        app_version = str(yaml.safe_load(f)["appVersion"])
    with open(os.path.join(args.chart, "values.schema.json")) as f:
        values_schema = json.load(f)

    with open(args.manifest) as f:
        docs = [d for d in yaml.safe_load_all(f) if d]

    by_kind = {}
    for doc in docs:
        kind, api = doc.get("kind"), doc.get("apiVersion")
        name = (doc.get("metadata") or {}).get("name")
        label = "%s/%s" % (kind, name)
        if not c.check(kind and api and name, "%s: apiVersion, kind and metadata.name are required" % label):
            continue
        by_kind.setdefault(kind, []).append(doc)
        c.check((doc["metadata"].get("labels") or {}).get("app.kubernetes.io/name") == "identify-connector",
                "%s: missing label app.kubernetes.io/name=identify-connector" % label)
        if (api, kind) in CRD_KINDS:
            continue
        c.check(doc["metadata"].get("namespace") == args.namespace,
                "%s: namespace is not %s" % (label, args.namespace))
        try:
            kubernetes_validate.validate(doc, args.kube_version, strict=True)
            c.check(True, "")
        except kubernetes_validate.ValidationError as e:
            path = ".".join(str(p) for p in e.path)
            c.check(False, "%s: invalid for Kubernetes %s at %s: %s" % (label, args.kube_version, path, e.message))
        except kubernetes_validate.SchemaNotFoundError as e:
            c.check(False, "%s: %s" % (label, e.message))

    def one(kind):
        items = by_kind.get(kind, [])
        c.check(len(items) == 1, "expected exactly one %s, found %d" % (kind, len(items)))
        return items[0] if items else None

    # --- effective values (what the templates derive from them) -----------
    kind = (values.get("workload") or {}).get("kind", "Deployment")
    stateful = kind == "StatefulSet"
    static_value = values.get("staticMembership", "auto")
    static = static_value if isinstance(static_value, bool) else stateful
    auto = values.get("autoscaling") or {}
    autoscaler = ("keda" if (auto.get("keda") or {}).get("enabled")
                  else "hpa" if (auto.get("hpa") or {}).get("enabled") else None)
    max_replicas = auto.get("maxReplicas") if auto.get("maxReplicas") is not None else auto.get("partitions")
    store_values = values.get("store") or {}
    persistence = store_values.get("persistence") or {}
    persistent = bool(persistence.get("enabled"))

    other_kind = "Deployment" if stateful else "StatefulSet"
    c.check(not by_kind.get(other_kind), "a %s is rendered although workload.kind is %s" % (other_kind, kind))
    services = by_kind.get("Service", [])
    headless = [s for s in services if s["spec"].get("clusterIP") == "None"]
    main_services = [s for s in services if s not in headless]
    c.check(len(main_services) == 1, "expected exactly one (not headless) Service, found %d" % len(main_services))
    deploy, cm = one(kind), one("ConfigMap")
    service = main_services[0] if main_services else None
    if not (deploy and service and cm):
        return report(c, len(docs))

    # --- config.toml -------------------------------------------------------
    toml_text = (cm.get("data") or {}).get("config.toml")
    config = None
    if c.check(isinstance(toml_text, str), "ConfigMap has no data.config.toml"):
        try:
            config = tomllib.loads(toml_text)
        except tomllib.TOMLDecodeError as e:
            c.check(False, "config.toml does not parse: %s" % e)
    if config is not None:
        if values.get("configToml"):
            expected = tomllib.loads(values["configToml"])
        else:
            expected = strip_nulls(values.get("config") or {})
        c.check(config == expected, "config.toml differs from the values:\n  rendered: %s\n  expected: %s"
                % (json.dumps(config, sort_keys=True), json.dumps(expected, sort_keys=True)))
        # The whole values schema (its config part refers to #/definitions).
        for err in jsonschema.Draft7Validator(values_schema).iter_errors({"config": config}):
            c.check(False, "config.toml violates the config schema at %s: %s"
                    % ("/".join(str(p) for p in err.path), err.message))
        kafka_cfg = config.get("kafka") or {}
        leaked = [k for k in ("sasl_password", "ssl_key_password") if k in kafka_cfg]
        leaked += ["key"] if "key" in (config.get("api") or {}) else []
        for client in ("consumer", "producer"):
            leaked += ["%s.%s" % (client, k) for k in (kafka_cfg.get(client) or {})
                       if k in ("sasl.password", "ssl.key.password")]
        c.check(not leaked, "secrets in the ConfigMap's config.toml: %s" % leaked)
        if args.config_out:
            os.makedirs(args.config_out, exist_ok=True)
            with open(os.path.join(args.config_out, args.combo + ".toml"), "w") as f:
                f.write(toml_text)
    config = config or {}

    # --- Deployment or StatefulSet ------------------------------------------
    pod = deploy["spec"]["template"]
    spec = pod["spec"]
    pod_labels = pod["metadata"].get("labels") or {}
    wspec = deploy["spec"]
    if autoscaler:
        c.check("replicas" not in wspec, "%s sets replicas although autoscaling.%s owns them" % (kind, autoscaler))
    else:
        c.check(wspec.get("replicas") == values["replicaCount"], "%s replicas != replicaCount" % kind)
    c.check(wspec.get("revisionHistoryLimit") == values["revisionHistoryLimit"],
            "revisionHistoryLimit differs from the values")
    c.check(subset(wspec["selector"]["matchLabels"], pod_labels),
            "%s selector does not match its pod labels" % kind)
    if stateful:
        c.check("strategy" not in wspec, "StatefulSet has the Deployment-only field strategy")
        c.check(wspec.get("podManagementPolicy") == "Parallel", "StatefulSet podManagementPolicy is not Parallel")
        c.check((wspec.get("updateStrategy") or {}).get("type") == "RollingUpdate",
                "StatefulSet updateStrategy is not RollingUpdate")
        c.check(len(headless) == 1, "StatefulSet without exactly one headless Service (found %d)" % len(headless))
        for hs in headless:
            c.check(wspec.get("serviceName") == hs["metadata"]["name"],
                    "StatefulSet serviceName %r is not the headless Service %r"
                    % (wspec.get("serviceName"), hs["metadata"]["name"]))
            c.check(hs["metadata"]["name"].endswith("-headless") and len(hs["metadata"]["name"]) <= 63,
                    "headless Service name is not <fullname>-headless (a DNS label)")
            c.check(subset(hs["spec"].get("selector"), pod_labels) and hs["spec"].get("selector"),
                    "headless Service selector does not match the pods")
            hports = {p["name"]: p for p in hs["spec"].get("ports") or []}
            c.check("http" in hports and hports["http"]["targetPort"] == "http",
                    "headless Service has no http port targeting http")
            c.check((hs["metadata"].get("labels") or {}).get(HEADLESS_LABEL) == "true",
                    "headless Service lacks the %s label the ServiceMonitor excludes" % HEADLESS_LABEL)
    else:
        c.check(not headless, "a headless Service is rendered for a Deployment")
        c.check("serviceName" not in wspec and "updateStrategy" not in wspec
                and "volumeClaimTemplates" not in wspec, "Deployment has StatefulSet-only fields")
        want_strategy = {"type": "Recreate"} if persistent else (values.get("strategy") or None)
        c.check(wspec.get("strategy") == want_strategy, "Deployment strategy is %s, expected %s%s"
                % (wspec.get("strategy"), want_strategy,
                   " (the store's one claim is opened by one process at a time)" if persistent else ""))
    c.check(subset(values.get("podLabels"), pod_labels), "podLabels missing from the pod")
    annotations = pod["metadata"].get("annotations") or {}
    c.check(re.fullmatch(r"[0-9a-f]{64}", str(annotations.get("checksum/config", ""))),
            "pod template lacks a sha256 checksum/config annotation")
    c.check(subset(values.get("podAnnotations"), annotations), "podAnnotations missing from the pod")
    containers = spec["containers"]
    c.check(len(containers) == 1, "expected one container")
    ctr = containers[0]
    image = values["image"]
    want_image = ("%s@%s" % (image["repository"], image["digest"]) if image.get("digest")
                  else "%s:%s" % (image["repository"], image.get("tag") or app_version))
    c.check(ctr["image"] == want_image, "image is %r, expected %r" % (ctr["image"], want_image))
    c.check(ctr.get("imagePullPolicy") == image["pullPolicy"], "imagePullPolicy not from values")
    c.check(ctr.get("args") == ["--config", CONFIG_FILE], "container args are not --config %s" % CONFIG_FILE)

    listen = (config.get("server") or {}).get("listen", "0.0.0.0:8080")
    http_port = int(listen.rsplit(":", 1)[1])
    ports = {p.get("name"): p for p in ctr.get("ports") or []}
    c.check("http" in ports and ports["http"]["containerPort"] == http_port,
            "container port http is not %d (server.listen %s)" % (http_port, listen))
    for probe, path in (("livenessProbe", "/healthz"), ("readinessProbe", "/readyz")):
        get = (ctr.get(probe) or {}).get("httpGet") or {}
        c.check(get.get("path") == path and get.get("port") in ("http", http_port),
                "%s is not GET %s on the http port" % (probe, path))

    mount_list, volume_list = ctr.get("volumeMounts") or [], spec.get("volumes") or []
    mounts = {m["name"]: m for m in mount_list}
    volumes = {v["name"]: v for v in volume_list}
    claim_templates = {t["metadata"]["name"]: t for t in wspec.get("volumeClaimTemplates") or []}
    c.check(len(volumes) == len(volume_list), "duplicate volume names: %s" % [v["name"] for v in volume_list])
    c.check(not set(volumes) & set(claim_templates), "a volume name is also a volumeClaimTemplate name")
    c.check(len({m["mountPath"] for m in mount_list}) == len(mount_list), "duplicate mountPaths")
    c.check(all(m["name"] in volumes or m["name"] in claim_templates for m in mount_list),
            "a volumeMount names no volume")
    for extra in values.get("extraVolumes") or []:
        c.check(volumes.get(extra["name"]) == extra, "extraVolumes %s missing from the pod" % extra["name"])
    for extra in values.get("extraVolumeMounts") or []:
        c.check(extra in mount_list, "extraVolumeMounts %s missing from the container" % extra["name"])
    c.check(mounts.get("config", {}).get("mountPath") == CONFIG_DIR and mounts["config"].get("readOnly"),
            "config volume is not mounted read-only at %s" % CONFIG_DIR)
    c.check((volumes.get("config", {}).get("configMap") or {}).get("name") == cm["metadata"]["name"],
            "config volume does not come from the ConfigMap")
    c.check(mounts.get("tmp", {}).get("mountPath") == "/tmp" and "emptyDir" in volumes.get("tmp", {}),
            "no emptyDir mounted at /tmp")

    # --- the local store: volume `store` at STORE_DIR, holding cache.dir ----
    store_mount = mounts.get("store") or {}
    c.check(store_mount.get("mountPath") == STORE_DIR and not store_mount.get("readOnly"),
            "store volume is not mounted writable at %s" % STORE_DIR)
    cache_dir = posixpath.normpath(posixpath.join(WORKING_DIR, str((config.get("cache") or {})
                                                                   .get("dir", "identify-cache"))))
    c.check(cache_dir == STORE_DIR or cache_dir.startswith(STORE_DIR + "/"),
            "cache.dir %s is not on the store volume (%s); the root filesystem is read-only" % (cache_dir, STORE_DIR))
    claims = by_kind.get("PersistentVolumeClaim", [])

    def check_claim(claim_spec, what):
        storage_class = persistence.get("storageClass") or ""
        c.check(claim_spec.get("accessModes") == (persistence.get("accessModes") or ["ReadWriteOnce"]),
                "%s accessModes differ from store.persistence.accessModes" % what)
        c.check(((claim_spec.get("resources") or {}).get("requests") or {}).get("storage")
                == (persistence.get("size") or "1Gi"), "%s size differs from store.persistence.size" % what)
        if storage_class == "-":
            c.check(claim_spec.get("storageClassName") == "", "%s storageClassName is not \"\" (storageClass -)" % what)
        elif storage_class:
            c.check(claim_spec.get("storageClassName") == storage_class,
                    "%s storageClassName is not %s" % (what, storage_class))
        else:
            c.check("storageClassName" not in claim_spec, "%s sets storageClassName although storageClass is empty" % what)

    if not persistent:
        empty_dir = volumes.get("store", {}).get("emptyDir")
        size_limit = (store_values.get("emptyDir") or {}).get("sizeLimit") or None
        c.check(empty_dir is not None, "store volume is not an emptyDir (store.persistence.enabled is false)")
        c.check((empty_dir or {}).get("sizeLimit") == size_limit,
                "store emptyDir sizeLimit is %r, expected %r" % ((empty_dir or {}).get("sizeLimit"), size_limit))
        c.check(not claims and not claim_templates, "store claims rendered although store.persistence.enabled is false")
    elif stateful:
        c.check("store" not in volumes, "StatefulSet has a pod volume store besides its volumeClaimTemplate")
        c.check(set(claim_templates) == {"store"}, "StatefulSet volumeClaimTemplates are %s, expected [store]"
                % sorted(claim_templates))
        c.check(not claims, "a PersistentVolumeClaim is rendered for a StatefulSet (volumeClaimTemplates do that)")
        if "store" in claim_templates:
            vct = claim_templates["store"]
            check_claim(vct.get("spec") or {}, "volumeClaimTemplate store")
            c.check(subset(vct["metadata"].get("labels"), wspec["selector"]["matchLabels"]),
                    "volumeClaimTemplate labels go beyond the selector labels (they are immutable)")
    else:
        claim_name = (volumes.get("store", {}).get("persistentVolumeClaim") or {}).get("claimName")
        c.check(claim_name == deploy["metadata"]["name"] + "-store",
                "store volume does not use the claim <fullname>-store (%s)" % claim_name)
        c.check(len(claims) == 1 and claims[0]["metadata"]["name"] == claim_name,
                "no PersistentVolumeClaim %s rendered" % claim_name)
        c.check(values["replicaCount"] == 1 and not autoscaler,
                "a Deployment's single store claim with replicaCount %s or autoscaling" % values["replicaCount"])
        for claim in claims:
            check_claim(claim.get("spec") or {}, "PersistentVolumeClaim %s" % claim["metadata"]["name"])

    sc, psc = ctr.get("securityContext") or {}, spec.get("securityContext") or {}
    c.check(sc.get("readOnlyRootFilesystem") is True, "readOnlyRootFilesystem is not true")
    c.check(sc.get("allowPrivilegeEscalation") is False, "allowPrivilegeEscalation is not false")
    c.check("ALL" in ((sc.get("capabilities") or {}).get("drop") or []), "capabilities do not drop ALL")
    c.check(psc.get("runAsNonRoot") is True and psc.get("runAsUser") == 10001, "pod does not run as non-root 10001")
    c.check((psc.get("seccompProfile") or {}).get("type") == "RuntimeDefault", "seccompProfile is not RuntimeDefault")
    c.check(spec.get("automountServiceAccountToken") is False, "service account token is mounted")

    grace = spec.get("terminationGracePeriodSeconds", 30)
    shutdown = (config.get("shutdown") or {}).get("timeout", "30s")
    try:
        c.check(grace > humantime_seconds(shutdown),
                "terminationGracePeriodSeconds %s does not exceed shutdown.timeout %s" % (grace, shutdown))
    except ValueError as e:
        c.check(False, str(e))

    c.check(ctr.get("resources") == values["resources"], "container resources differ from values.resources")
    for key in ("nodeSelector", "tolerations", "affinity", "topologySpreadConstraints", "imagePullSecrets"):
        want = values.get(key) or None
        c.check(spec.get(key) == want, "pod %s differs from the values" % key)
    c.check(spec.get("serviceAccountName") == (values["serviceAccount"]["name"] or
                                               (deploy["metadata"]["name"] if values["serviceAccount"]["create"]
                                                else "default")),
            "serviceAccountName is wrong")
    sas = by_kind.get("ServiceAccount", [])
    c.check(len(sas) == (1 if values["serviceAccount"]["create"] else 0), "ServiceAccount presence is wrong")
    if sas:
        c.check(sas[0]["metadata"]["name"] == spec.get("serviceAccountName"), "ServiceAccount name mismatch")

    env = ctr.get("env") or []
    names = [e["name"] for e in env]
    c.check(len(names) == len(set(names)), "duplicate environment variables: %s" % names)
    env_by_name = {e["name"]: e for e in env}
    c.check((env_by_name.get("RUST_LOG") or {}).get("value") == values["logLevel"], "RUST_LOG is not logLevel")
    for extra in values.get("extraEnv") or []:
        c.check(env_by_name.get(extra["name"]) == extra, "extraEnv %s missing" % extra["name"])
    c.check((ctr.get("envFrom") or []) == (values.get("extraEnvFrom") or []), "envFrom differs from extraEnvFrom")
    key_ref = ((env_by_name.get("CRUSTDATA_API_KEY") or {}).get("valueFrom") or {}).get("secretKeyRef")
    secrets = by_kind.get("Secret", [])
    if values.get("existingSecret"):
        c.check(not secrets, "a Secret is rendered although existingSecret is set")
        c.check(key_ref == {"name": values["existingSecret"], "key": values["existingSecretKey"]},
                "CRUSTDATA_API_KEY does not reference existingSecret/existingSecretKey")
    elif values.get("apiKey"):
        c.check(len(secrets) == 1, "apiKey is set but no Secret is rendered")
        if secrets:
            c.check(key_ref is not None and key_ref.get("name") == secrets[0]["metadata"]["name"]
                    and key_ref.get("key") in (secrets[0].get("data") or {}),
                    "CRUSTDATA_API_KEY does not reference the chart's Secret")
            c.check("checksum/secret" in annotations, "no checksum/secret annotation")
    else:
        c.check(key_ref is None and not secrets, "an API key is wired although none is configured")
    # Static membership: the instance id is the pod name, never one shared value.
    c.check(not (config.get("kafka") or {}).get("instance_id"),
            "config.toml sets kafka.instance_id: every pod would share one group.instance.id")
    user_instance_id = any(e["name"] == INSTANCE_ID_ENV for e in values.get("extraEnv") or [])
    if static:
        c.check(not user_instance_id, "extraEnv repeats %s although static membership is on" % INSTANCE_ID_ENV)
        c.check(env_by_name.get(INSTANCE_ID_ENV) == {"name": INSTANCE_ID_ENV, "valueFrom": {
            "fieldRef": {"fieldPath": "metadata.name"}}},
            "static membership is on but %s is not the pod name (downward API)" % INSTANCE_ID_ENV)
    else:
        c.check(user_instance_id or INSTANCE_ID_ENV not in env_by_name,
                "%s is set although static membership is off" % INSTANCE_ID_ENV)
    for value, var in (("saslPasswordSecret", "IDENTIFY_KAFKA__SASL_PASSWORD"),
                       ("sslKeyPasswordSecret", "IDENTIFY_KAFKA__SSL_KEY_PASSWORD")):
        ref = (values.get("kafka") or {}).get(value) or {}
        got = ((env_by_name.get(var) or {}).get("valueFrom") or {}).get("secretKeyRef")
        if ref.get("name"):
            c.check(got == {"name": ref["name"], "key": ref["key"]},
                    "%s does not reference kafka.%s (%s)" % (var, value, got))
        else:
            c.check(var not in env_by_name, "%s is set although kafka.%s.name is empty" % (var, value))

    # --- Kafka TLS files and SASL credentials ------------------------------
    # librdkafka reads *.location files inside the container: from a mounted
    # volume, or the image's system CA bundle.
    mount_paths = [m["mountPath"].rstrip("/") + "/" for m in mount_list]
    kafka_cfg = config.get("kafka") or {}
    sasl_password_env = ("IDENTIFY_KAFKA__SASL_PASSWORD" in env_by_name
                         or bool(values.get("extraEnvFrom")))
    for client in ("consumer", "producer"):
        props = kafka_cfg.get(client) or {}
        for key, path in props.items():
            if key.endswith(".location") and path != "probe":
                c.check(path.startswith("/etc/ssl/certs/") or any(path.startswith(m) for m in mount_paths),
                        "kafka.%s.%s %s is neither in a mounted volume nor in /etc/ssl/certs"
                        % (client, key, path))
        mechanism = props.get("sasl.mechanism", props.get("sasl.mechanisms", "GSSAPI"))
        if props.get("security.protocol", "").upper().startswith("SASL") and mechanism.upper() in (
                "PLAIN", "SCRAM-SHA-256", "SCRAM-SHA-512"):
            c.check("sasl.username" in props, "kafka.%s uses SASL %s without sasl.username" % (client, mechanism))
            c.check(sasl_password_env, "kafka.%s uses SASL %s but IDENTIFY_KAFKA__SASL_PASSWORD is not set "
                    "(kafka.saslPasswordSecret)" % (client, mechanism))

    # --- Service -------------------------------------------------------------
    svc_ports = {p["name"]: p for p in service["spec"]["ports"]}
    c.check(subset(service["spec"]["selector"], pod_labels), "Service selector does not match the pods")
    c.check("http" in svc_ports and svc_ports["http"]["targetPort"] == "http"
            and svc_ports["http"]["port"] == values["service"]["port"], "Service port http is wrong")

    # --- Ingress -------------------------------------------------------------
    ingresses = by_kind.get("Ingress", [])
    c.check(len(ingresses) == (1 if values["ingress"]["enabled"] else 0), "Ingress presence is wrong")
    for ing in ingresses:
        for rule in ing["spec"]["rules"]:
            for p in rule["http"]["paths"]:
                backend = p["backend"]["service"]
                c.check(backend["name"] == service["metadata"]["name"]
                        and backend["port"].get("number") == values["service"]["port"],
                        "Ingress backend is not the Service's http port")
                c.check(p["path"].startswith("/webhooks/crustdata"),
                        "Ingress exposes %s, not only the webhook path" % p["path"])
    # The callback URL Crustdata calls ({public_url}/webhooks/crustdata/{token},
    # src/pipeline/mod.rs) must reach the route the connector serves
    # (POST /webhooks/crustdata/{token}, src/server.rs) through the Ingress
    # unchanged: same host, a matching path, and the same path at the pod.
    public_url = (config.get("webhook") or {}).get("public_url", "")
    if ingresses and public_url:
        url = urllib.parse.urlsplit(public_url.rstrip("/") + "/webhooks/crustdata/t0ken")
        served = "/webhooks/crustdata/t0ken"
        rules = [r for ing in ingresses for r in ing["spec"]["rules"]
                 if r.get("host") in (None, "", url.hostname)]
        c.check(rules, "no Ingress rule for the public_url host %s" % url.hostname)
        routed = [p for r in rules for p in r["http"]["paths"]
                  if ingress_path_matches(p["path"], p.get("pathType", "Prefix"), url.path)]
        c.check(routed, "callback path %s (from public_url %s) matches no Ingress path %s"
                % (url.path, public_url, [p["path"] for r in rules for p in r["http"]["paths"]]))
        c.check(url.path == served, "callback path %s differs from the served %s; the Ingress does not "
                "rewrite paths" % (url.path, served))

    # --- PodDisruptionBudget -------------------------------------------------
    pdb_values = values["podDisruptionBudget"]
    min_pods = auto.get("minReplicas", 1) if autoscaler else values["replicaCount"]
    want_pdb = pdb_values["enabled"] if isinstance(pdb_values.get("enabled"), bool) else min_pods > 1
    pdbs = by_kind.get("PodDisruptionBudget", [])
    c.check(len(pdbs) == (1 if want_pdb else 0), "PodDisruptionBudget presence is wrong")
    for pdb in pdbs:
        c.check(subset(pdb["spec"]["selector"]["matchLabels"], pod_labels), "PDB selector does not match the pods")
        c.check(("minAvailable" in pdb["spec"]) != ("maxUnavailable" in pdb["spec"]),
                "PDB must set exactly one of minAvailable/maxUnavailable")

    # --- ServiceMonitor (CRD: no schema in kubernetes-validate) --------------
    monitors = by_kind.get("ServiceMonitor", [])
    c.check(len(monitors) == (1 if values["serviceMonitor"]["enabled"] else 0), "ServiceMonitor presence is wrong")
    for sm in monitors:
        c.check(sm["apiVersion"] == "monitoring.coreos.com/v1", "ServiceMonitor apiVersion is not monitoring.coreos.com/v1")
        c.check(set(sm) <= {"apiVersion", "kind", "metadata", "spec"}, "ServiceMonitor has unknown top-level fields")
        c.check(re.fullmatch(r"[a-z0-9]([-a-z0-9.]*[a-z0-9])?", sm["metadata"]["name"]) is not None,
                "ServiceMonitor name is not a DNS subdomain")
        c.check(subset(values["serviceMonitor"]["labels"], sm["metadata"].get("labels") or {}),
                "serviceMonitor.labels missing")
        smspec = sm.get("spec") or {}
        c.check(set(smspec) <= SERVICEMONITOR_SPEC_KEYS, "ServiceMonitor spec has unknown fields: %s"
                % sorted(set(smspec) - SERVICEMONITOR_SPEC_KEYS))
        c.check(subset(smspec.get("selector", {}).get("matchLabels"), service["metadata"]["labels"])
                and smspec.get("selector", {}).get("matchLabels"), "ServiceMonitor selector does not match the Service")
        c.check(selects(smspec.get("selector"), service["metadata"]["labels"]),
                "ServiceMonitor selector (with its matchExpressions) does not select the Service")
        for hs in headless:
            c.check(not selects(smspec.get("selector"), hs["metadata"].get("labels") or {}),
                    "ServiceMonitor also selects the headless Service (every pod would be scraped twice)")
        c.check(args.namespace in ((smspec.get("namespaceSelector") or {}).get("matchNames") or []),
                "ServiceMonitor namespaceSelector misses the release namespace")
        endpoints = smspec.get("endpoints") or []
        c.check(endpoints, "ServiceMonitor has no endpoints")
        for ep in endpoints:
            c.check(set(ep) <= SERVICEMONITOR_ENDPOINT_KEYS, "ServiceMonitor endpoint has unknown fields: %s"
                    % sorted(set(ep) - SERVICEMONITOR_ENDPOINT_KEYS))
            c.check(ep.get("port") in svc_ports, "ServiceMonitor endpoint port is not a Service port name")
            c.check(ep.get("path") == "/metrics", "ServiceMonitor endpoint path is not /metrics")
            for key in ("interval", "scrapeTimeout"):
                if key in ep:
                    c.check(isinstance(ep[key], str) and PROM_DURATION.fullmatch(ep[key]) and ep[key],
                            "ServiceMonitor %s %r is not a Prometheus duration" % (key, ep[key]))

    # --- Autoscaling ----------------------------------------------------------
    target_ref = {"apiVersion": "apps/v1", "kind": kind, "name": deploy["metadata"]["name"]}
    partitions = auto.get("partitions")
    scaled = by_kind.get("ScaledObject", [])
    hpas = by_kind.get("HorizontalPodAutoscaler", [])
    c.check(len(scaled) == (1 if autoscaler == "keda" else 0), "ScaledObject presence is wrong")
    c.check(len(hpas) == (1 if autoscaler == "hpa" else 0), "HorizontalPodAutoscaler presence is wrong")
    if autoscaler:
        c.check(max_replicas is not None, "autoscaling without maxReplicas nor partitions was rendered")
        c.check(partitions is None or (max_replicas or 0) <= partitions,
                "autoscaling maxReplicas %s exceeds partitions %s" % (max_replicas, partitions))
    for so in scaled:
        c.check(so["apiVersion"] == "keda.sh/v1alpha1", "ScaledObject apiVersion is not keda.sh/v1alpha1")
        c.check(set(so) <= {"apiVersion", "kind", "metadata", "spec"}, "ScaledObject has unknown top-level fields")
        c.check(so["metadata"].get("namespace") == args.namespace, "ScaledObject namespace is not %s" % args.namespace)
        sospec = so.get("spec") or {}
        c.check(set(sospec) <= SCALEDOBJECT_SPEC_KEYS, "ScaledObject spec has unknown fields: %s"
                % sorted(set(sospec) - SCALEDOBJECT_SPEC_KEYS))
        c.check(sospec.get("scaleTargetRef") == target_ref, "ScaledObject scaleTargetRef %s is not the workload %s"
                % (sospec.get("scaleTargetRef"), target_ref))
        c.check(sospec.get("minReplicaCount") == auto.get("minReplicas", 1), "ScaledObject minReplicaCount is wrong")
        c.check(sospec.get("maxReplicaCount") == max_replicas, "ScaledObject maxReplicaCount is %s, expected %s"
                % (sospec.get("maxReplicaCount"), max_replicas))
        triggers = sospec.get("triggers") or []
        c.check(triggers, "ScaledObject has no triggers")
        kafka_values = (values.get("config") or {}).get("kafka") or {}
        keda = auto.get("keda") or {}
        lag_seconds = keda.get("lagSeconds") or {}
        prom = [t for t in triggers if t.get("type") == "prometheus"]
        triggers = [t for t in triggers if t.get("type") != "prometheus"]
        c.check(len(prom) == (1 if lag_seconds.get("threshold") else 0),
                "ScaledObject has %d prometheus triggers; autoscaling.keda.lagSeconds.threshold asks for %d"
                % (len(prom), 1 if lag_seconds.get("threshold") else 0))
        for t in prom:
            md = t.get("metadata") or {}
            c.check(set(t) <= SCALEDOBJECT_TRIGGER_KEYS and set(md) == {"serverAddress", "query", "threshold"},
                    "prometheus trigger has unknown or missing fields: %s" % sorted(md))
            c.check(t.get("metricType") == "Value",
                    "prometheus trigger metricType is not Value (the lag is a maximum, not a sum)")
            c.check(md.get("serverAddress") == lag_seconds.get("serverAddress"),
                    "prometheus trigger serverAddress is not autoscaling.keda.lagSeconds.serverAddress")
            c.check(md.get("threshold") == str(lag_seconds["threshold"]),
                    "prometheus trigger threshold is not autoscaling.keda.lagSeconds.threshold")
            want_query = lag_seconds.get("query") or 'max(identify_lag_seconds{namespace="%s",service="%s"})' % (
                args.namespace, target_ref["name"])
            c.check(md.get("query") == want_query, "prometheus trigger query is %r, expected %r"
                    % (md.get("query"), want_query))
        c.check(sorted(t.get("metadata", {}).get("topic") for t in triggers)
                == sorted(kafka_values.get("input_topics") or []),
                "ScaledObject triggers are not one per input topic")
        for t in triggers:
            md = t.get("metadata") or {}
            c.check(set(t) <= SCALEDOBJECT_TRIGGER_KEYS, "ScaledObject trigger has unknown fields: %s"
                    % sorted(set(t) - SCALEDOBJECT_TRIGGER_KEYS))
            c.check(t.get("type") == "kafka", "ScaledObject trigger type is not kafka")
            c.check(set(md) <= KEDA_KAFKA_METADATA_KEYS, "kafka trigger metadata has unknown keys: %s"
                    % sorted(set(md) - KEDA_KAFKA_METADATA_KEYS))
            c.check(all(isinstance(v, str) for v in md.values()), "kafka trigger metadata values must be strings")
            c.check(md.get("bootstrapServers") == (config.get("kafka") or {}).get("brokers"),
                    "kafka trigger bootstrapServers is not config.kafka.brokers")
            c.check(md.get("consumerGroup") == (config.get("kafka") or {}).get("group_id"),
                    "kafka trigger consumerGroup is not config.kafka.group_id")
            c.check(md.get("lagThreshold") == str(keda.get("lagThreshold", "1000"))
                    and re.fullmatch(r"[1-9][0-9]*", md.get("lagThreshold", "")),
                    "kafka trigger lagThreshold is not autoscaling.keda.lagThreshold")
            c.check(md.get("offsetResetPolicy") in ("earliest", "latest"), "kafka trigger offsetResetPolicy is invalid")
            want_auth = {"name": keda["authenticationRef"]} if keda.get("authenticationRef") else None
            c.check(t.get("authenticationRef") == want_auth, "kafka trigger authenticationRef is %s, expected %s"
                    % (t.get("authenticationRef"), want_auth))
    for hpa in hpas:
        hspec = hpa["spec"]
        hv = auto.get("hpa") or {}
        c.check(hspec.get("scaleTargetRef") == target_ref, "HPA scaleTargetRef %s is not the workload %s"
                % (hspec.get("scaleTargetRef"), target_ref))
        c.check(hspec.get("minReplicas") == auto.get("minReplicas", 1) and hspec.get("maxReplicas") == max_replicas,
                "HPA min/max replicas are %s/%s, expected %s/%s" % (hspec.get("minReplicas"), hspec.get("maxReplicas"),
                                                                    auto.get("minReplicas", 1), max_replicas))
        metrics = {m["type"]: m for m in hspec.get("metrics") or []}
        cpu = hv.get("targetCPUUtilizationPercentage")
        if cpu is not None:
            c.check(((metrics.get("Resource") or {}).get("resource") or {}) == {
                "name": "cpu", "target": {"type": "Utilization", "averageUtilization": cpu}},
                "HPA CPU metric is not targetCPUUtilizationPercentage")
            c.check("cpu" in ((ctr.get("resources") or {}).get("requests") or {}),
                    "HPA CPU utilization without resources.requests.cpu")
        else:
            c.check("Resource" not in metrics, "HPA has a CPU metric although the target is null")
        if hv.get("externalLagMetric"):
            ext = (metrics.get("External") or {}).get("external") or {}
            c.check((ext.get("metric") or {}).get("name") == hv["externalLagMetric"],
                    "HPA External metric is not autoscaling.hpa.externalLagMetric")
            c.check(((ext.get("metric") or {}).get("selector") or {}).get("matchLabels")
                    == (hv.get("externalLagMetricSelector") or None), "HPA External metric selector is wrong")
            c.check(ext.get("target") == {"type": "AverageValue",
                                          "averageValue": str(hv.get("lagTargetAverageValue", "1000"))},
                    "HPA External target is not AverageValue lagTargetAverageValue")
        else:
            c.check("External" not in metrics, "HPA has an External metric although externalLagMetric is empty")
        c.check(metrics, "HPA has no metrics")

    known = {"ServiceAccount", "ConfigMap", "Secret", "Service", "Deployment", "StatefulSet", "Ingress",
             "PodDisruptionBudget", "ServiceMonitor", "PersistentVolumeClaim", "ScaledObject",
             "HorizontalPodAutoscaler"}
    c.check(set(by_kind) <= known, "unexpected kinds rendered: %s" % sorted(set(by_kind) - known))
    return report(c, len(docs))


def report(c, ndocs=0):
    if c.failures:
        for failure in c.failures:
            print("  FAIL [%s] %s" % (c.combo, failure))
        return 1
    print("  ok   [%s] %d manifests, %d checks" % (c.combo, ndocs, c.passed))
    return 0


if __name__ == "__main__":
    sys.exit(main())
