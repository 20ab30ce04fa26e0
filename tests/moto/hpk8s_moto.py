#!/usr/bin/env python3
"""moto server with SageMaker HyperPod cluster-node APIs filled in, for hpk8s tests.

moto 5.2 implements Secrets Manager well but HyperPod cluster nodes poorly:
ListClusterNodes returns the first page forever, node ids are `<group>-<n>`
instead of `i-...`, nodes have no address or host name, and the Batch*
node calls are missing. This launcher patches `moto.sagemaker` in-process,
BEFORE the server starts, then serves on 127.0.0.1.

Shapes follow botocore's SageMaker service model (service-2.json); moto's
serializer renders our dicts through that model.

Test-only endpoints (JSON in, JSON out; all state is cleared by
`POST /moto-api/reset` like the rest of moto):

* `POST /hpk8s-moto/clusters` -- seed a cluster from a resource_config.json
  document (`ClusterConfig.ClusterArn/ClusterName`, `InstanceGroups[].Name,
  InstanceType, Instances[].InstanceId, CustomerIpAddress, InstanceName`).
  Missing instance ids and addresses are generated. Answers
  `{"ClusterArn", "ClusterName", "NodeIds": [...]}`.
* `POST /hpk8s-moto/throttle` -- `{"count": N, "operations": ["ListClusterNodes"]}`:
  the next N matching AWS calls (any operation when `operations` is absent)
  fail with HTTP 400 `ThrottlingException`.
* `POST /hpk8s-moto/config` -- `{"replace_delay_ms": 0, "pending_reads": 1}`:
  a replaced or rebooted node stays `Pending` until the delay has passed AND
  it has been read (listed or described) `pending_reads` times, then turns
  `Running` (replace: with a new LaunchTime; host name and address stay).
* `POST /hpk8s-moto/node-errors` -- `{"InstanceIdInUse": ["i-..."]}`: Batch
  reboot/replace answer these ids with that `ErrorCode` (as when HyperPod's
  own recovery is acting on them); `{}` clears.
* `POST /hpk8s-moto/unsupported` -- `{"operations": ["BatchRebootClusterNodes"]}`:
  those calls fail with `ValidationException` (a cluster whose software
  does not offer them yet).
* `POST /hpk8s-moto/batch-calls` -- answers the Batch* calls received so far:
  `[{"operation", "NodeIds"}]`.
* `POST /hpk8s-moto/calls` -- answers the AWS calls received, by operation.
* `POST /hpk8s-moto/deny` -- `{"operation": "ListClusterNodes", "after": 1, "count": 1}`:
  after `after` calls of the operation, the next `count` fail with
  `AccessDeniedException`.
* `POST /hpk8s-moto/instances` -- `{"status": {"i-...": ["Failure", "message"]},
  "remove": ["i-..."]}`: sets instance statuses, removes instances.
* config `replace_new_instance: 1` -- a replaced node comes back as a new
  instance (new id and address, same group), as HyperPod replaces.

Usage: hpk8s_moto.py --port PORT [--host 127.0.0.1]
"""

import argparse
import base64
import hashlib
import ipaddress
import json
import os
import threading
import time
from datetime import datetime, timezone

from moto.sagemaker import models as sm_models
from moto.sagemaker import responses as sm_responses
from moto.sagemaker.exceptions import ResourceNotFound, ValidationError
from moto.core import DEFAULT_ACCOUNT_ID
from moto.core.responses import ActionResult

LOCK = threading.RLock()

DEFAULT_CONFIG = {"replace_delay_ms": 0, "pending_reads": 1, "replace_new_instance": 0}
STATE = {"throttle": 0, "throttle_ops": None, "config": dict(DEFAULT_CONFIG),
         "node_errors": {}, "unsupported": set(), "batch_calls": [], "calls": {},
         "deny": None, "replaced": 0}

DEFAULT_LIFECYCLE = {"SourceS3Uri": "s3://sagemaker-hpk8s-lifecycle/", "OnCreate": "on_create.sh"}
MAX_BATCH = 25  # NodeIds of BatchReplace/BatchReboot (service model: 1-25)


def _now():
    return datetime.now(timezone.utc)


def _instance_id(seed):
    """`i-` and 17 hex digits, deterministic for a seed (like i-0cbbe3075137ffa1d)."""
    return "i-0" + hashlib.sha256(seed.encode()).hexdigest()[:16]


def _hostname(ip, region):
    dashed = "ip-" + ip.replace(".", "-")
    # EC2's private DNS: us-east-1 uses ec2.internal, other regions <region>.compute.internal.
    return f"{dashed}.ec2.internal" if region == "us-east-1" else f"{dashed}.{region}.compute.internal"


class HyperPodNode:
    """A cluster node with the fields the real ClusterNodeSummary/Details carry."""

    def __init__(self, cluster, group, instance_type, instance_id, ip, order, lifecycle=None,
                 threads_per_core=1, name=None):
        self.cluster = cluster
        self.instance_group_name = group
        self.instance_type = instance_type
        self.instance_id = instance_id
        self.node_logical_id = name
        self.private_ip = ip
        self.hostname = _hostname(ip, cluster.region_name)
        self.order = order  # insertion order: the tie-breaker for a stable listing
        self.life_cycle_config = lifecycle or dict(DEFAULT_LIFECYCLE)
        self.threads_per_core = threads_per_core
        self.status = "Running"
        self.message = ""
        self.launch_time = _now()
        self.pending_until = None
        self.pending_reads = 0
        self.new_launch_time_on_running = False

    def start_pending(self, replace):
        cfg = STATE["config"]
        self.status = "Pending"
        self.message = "Replacing node" if replace else "Rebooting node"
        self.pending_until = time.monotonic() + cfg["replace_delay_ms"] / 1000.0
        self.pending_reads = cfg["pending_reads"]
        self.new_launch_time_on_running = replace

    def observe(self):
        """Called on every read: advances Pending -> Running when due."""
        if self.status != "Pending" or self.pending_until is None:
            return  # not pending, or set Pending by a test: it stays so
        if self.pending_reads <= 0 and time.monotonic() >= self.pending_until:
            self.status = "Running"
            self.message = ""
            if self.new_launch_time_on_running:
                self.launch_time = _now()
                if STATE["config"].get("replace_new_instance"):
                    self._become_new_instance()
            return
        self.pending_reads -= 1

    def _become_new_instance(self):
        """A replacement as HyperPod does it: a new instance (id, address)
        in the same group; the old id disappears."""
        STATE["replaced"] += 1
        nodes = self.cluster.nodes
        nodes.pop(self.instance_id, None)
        self.instance_id = _instance_id(f"{self.cluster.arn}/replacement/{STATE['replaced']}")
        self.private_ip = str(ipaddress.ip_address("10.1.200.10") + STATE["replaced"])
        self.hostname = _hostname(self.private_ip, self.cluster.region_name)
        nodes[self.instance_id] = self

    def _status(self):
        status = {"Status": self.status}
        if self.message:
            status["Message"] = self.message
        return status

    def summary(self):
        return {
            "InstanceGroupName": self.instance_group_name,
            "InstanceId": self.instance_id,
            "InstanceType": self.instance_type,
            "LaunchTime": self.launch_time,
            "InstanceStatus": self._status(),
            "PrivateDnsHostname": self.hostname,
        }

    def describe(self):
        out = self.summary()
        out.update({
            "LifeCycleConfig": self.life_cycle_config,
            "ThreadsPerCore": self.threads_per_core,
            "PrivatePrimaryIp": self.private_ip,
            "Placement": {"AvailabilityZone": self.cluster.region_name + "a"},
        })
        if self.node_logical_id:
            out["NodeLogicalId"] = self.node_logical_id
        return out


def _backend(response):
    return response.sagemaker_backend


def _find_cluster(backend, name_or_arn):
    if not name_or_arn:
        raise ValidationError(message="1 validation error detected: Value null at 'clusterName' failed to satisfy constraint: Member must not be null")
    for cluster in backend.clusters.values():
        if name_or_arn in (cluster.cluster_name, cluster.arn):
            return cluster
    raise ResourceNotFound(message=f"Cluster with name or ARN {name_or_arn} not found.")


def _hyperpod_nodes(cluster):
    """The cluster's nodes as HyperPodNodes (clusters created through CreateCluster are converted once)."""
    nodes = cluster.nodes
    if all(isinstance(n, HyperPodNode) for n in nodes.values()):
        return nodes
    converted = {}
    base = ipaddress.ip_address("10.1.0.10")
    for order, node in enumerate(nodes.values()):
        if isinstance(node, HyperPodNode):
            converted[node.instance_id] = node
            continue
        iid = _instance_id(f"{cluster.arn}/{node.instance_id}")
        hp = HyperPodNode(cluster, node.instance_group_name, node.instance_type, iid,
                          str(base + order), order, node.life_cycle_config,
                          node.threads_per_core or 1)
        converted[iid] = hp
    cluster.nodes = converted
    return converted


def _all_backends():
    for account in sm_models.sagemaker_backends.values():
        for backend in account.values():
            yield backend


def seed_cluster(doc, default_region="us-west-2"):
    """Creates a cluster from a resource_config.json document.

    The cluster lives in the ARN's region but in moto's request account
    (DEFAULT_ACCOUNT_ID, or MOTO_ACCOUNT_ID): the ARN keeps the document's
    account so that callers see the ARN they seeded.
    """
    cfg = doc.get("ClusterConfig") or {}
    arn = cfg.get("ClusterArn")
    name = cfg.get("ClusterName") or "hpk8s-test"
    account_id = DEFAULT_ACCOUNT_ID
    region = arn.split(":")[3] if arn else default_region
    backend = sm_models.sagemaker_backends[account_id][region]
    cluster = object.__new__(sm_models.Cluster)
    cluster.region_name = region
    cluster.account_id = account_id
    cluster.cluster_name = name
    cluster.arn = arn or f"arn:aws:sagemaker:{region}:{account_id}:cluster/{hashlib.sha256(name.encode()).hexdigest()[:12]}"
    cluster.vpc_config = {"SecurityGroupIds": ["sg-0123456789abcdef0"], "Subnets": ["subnet-0123456789abcdef0"]}
    cluster.tags = []
    cluster.status = "InService"
    cluster.creation_time = _now()
    cluster.failure_message = ""
    cluster.instance_groups = []
    cluster.nodes = {}
    base = ipaddress.ip_address("10.1.0.10")
    order = 0
    for group in doc.get("InstanceGroups") or []:
        gname = group.get("Name") or group.get("InstanceGroupName")
        itype = group.get("InstanceType", "ml.p5.48xlarge")
        instances = group.get("Instances") or []
        cluster.instance_groups.append({
            "InstanceGroupName": gname, "InstanceType": itype,
            "CurrentCount": len(instances), "TargetCount": len(instances),
            "LifeCycleConfig": dict(DEFAULT_LIFECYCLE),
            "ExecutionRole": f"arn:aws:iam::{account_id}:role/hpk8s-{gname}",
            "ThreadsPerCore": 1,
        })
        for inst in instances:
            iid = inst.get("InstanceId") or _instance_id(f"{cluster.arn}/{gname}/{order}")
            ip = inst.get("CustomerIpAddress") or str(base + order)
            node = HyperPodNode(cluster, gname, itype, iid, ip, order)
            if iid in cluster.nodes:
                raise ValueError(f"duplicate InstanceId {iid}")
            cluster.nodes[iid] = node
            order += 1
    with LOCK:
        backend.clusters[name] = cluster
    return {"ClusterArn": cluster.arn, "ClusterName": name, "NodeIds": list(cluster.nodes)}


# --- patched SageMaker response handlers -------------------------------------------------

def _encode_token(offset):
    return base64.urlsafe_b64encode(json.dumps({"o": offset}).encode()).decode()


def _decode_token(token):
    try:
        return int(json.loads(base64.urlsafe_b64decode(token.encode()))["o"])
    except Exception:
        raise ValidationError(message=f"Invalid pagination token {token!r}.")


def list_cluster_nodes(self):
    with LOCK:
        cluster = _find_cluster(_backend(self), self._get_param("ClusterName"))
        nodes = list(_hyperpod_nodes(cluster).values())
        max_results = self._get_param("MaxResults")
        if max_results is None:
            max_results = 100
        if not 1 <= int(max_results) <= 100:
            raise ValidationError(message=f"1 validation error detected: Value '{max_results}' at 'maxResults' failed to satisfy constraint: Member must have value between 1 and 100")
        contains = self._get_param("InstanceGroupNameContains")
        if contains:
            nodes = [n for n in nodes if contains in n.instance_group_name]
        after = self._get_param("CreationTimeAfter")
        before = self._get_param("CreationTimeBefore")
        if after is not None:
            nodes = [n for n in nodes if n.launch_time.timestamp() > _ts(after)]
        if before is not None:
            nodes = [n for n in nodes if n.launch_time.timestamp() < _ts(before)]
        sort_by = self._get_param("SortBy") or "CREATION_TIME"
        reverse = self._get_param("SortOrder") == "Descending"
        if sort_by == "NAME":
            nodes.sort(key=lambda n: (n.instance_group_name, n.order), reverse=reverse)
        else:
            # The seed order breaks ties between equal launch times: pages stay stable.
            nodes.sort(key=lambda n: (n.launch_time, n.order), reverse=reverse)
        token = self._get_param("NextToken")
        start = _decode_token(token) if token else 0
        page = nodes[start:start + int(max_results)]
        for n in page:
            n.observe()
        result = {"ClusterNodeSummaries": [n.summary() for n in page]}
        if start + len(page) < len(nodes):
            result["NextToken"] = _encode_token(start + len(page))
        return ActionResult(result)


def _ts(value):
    if isinstance(value, datetime):
        return value.timestamp()
    return float(value)


def describe_cluster_node(self):
    with LOCK:
        cluster = _find_cluster(_backend(self), self._get_param("ClusterName"))
        nodes = _hyperpod_nodes(cluster)
        node_id = self._get_param("NodeId")
        logical = self._get_param("NodeLogicalId")
        node = nodes.get(node_id) if node_id else next(
            (n for n in nodes.values() if logical and n.node_logical_id == logical), None)
        if node is None:
            raise ResourceNotFound(message=f"Node {node_id or logical} not found in cluster {cluster.cluster_name}.")
        node.observe()
        return ActionResult({"NodeDetails": node.describe()})


def describe_cluster(self):
    with LOCK:
        cluster = _find_cluster(_backend(self), self._get_param("ClusterName"))
        return ActionResult(cluster.describe())


def _node_ids(self, limit):
    ids = self._get_param("NodeIds") or []
    if limit is not None and not 1 <= len(ids) <= limit:
        raise ValidationError(message=f"1 validation error detected: Value at 'nodeIds' failed to satisfy constraint: Member must have length between 1 and {limit}")
    return ids


def _batch_restart(self, replace):
    with LOCK:
        operation = "BatchReplaceClusterNodes" if replace else "BatchRebootClusterNodes"
        if operation in STATE["unsupported"]:
            raise ValidationError(message=f"{operation} is not supported for this cluster's software version.")
        cluster = _find_cluster(_backend(self), self._get_param("ClusterName"))
        nodes = _hyperpod_nodes(cluster)
        ok, failed = [], []
        ids = _node_ids(self, MAX_BATCH)
        STATE["batch_calls"].append({"operation": operation, "NodeIds": list(ids)})
        forced = {nid: code for code, nids in STATE["node_errors"].items() for nid in nids}
        for nid in ids:
            node = nodes.get(nid)
            if nid in forced:
                failed.append({"NodeId": nid, "ErrorCode": forced[nid],
                               "Message": f"Instance {nid}: {forced[nid]}."})
            elif node is None:
                failed.append({"NodeId": nid, "ErrorCode": "InstanceIdNotFound",
                               "Message": f"Instance {nid} not found in cluster {cluster.cluster_name}."})
            elif node.status != "Running":
                failed.append({"NodeId": nid, "ErrorCode": "InvalidInstanceStatus",
                               "Message": f"Instance {nid} is {node.status}, not Running."})
            else:
                node.start_pending(replace)
                ok.append(nid)
        result = {"Successful": ok, "Failed": failed}
        return ActionResult({k: v for k, v in result.items() if v})


def batch_replace_cluster_nodes(self):
    return _batch_restart(self, replace=True)


def batch_reboot_cluster_nodes(self):
    return _batch_restart(self, replace=False)


def batch_delete_cluster_nodes(self):
    with LOCK:
        cluster = _find_cluster(_backend(self), self._get_param("ClusterName"))
        nodes = _hyperpod_nodes(cluster)
        ok, failed = [], []
        for nid in _node_ids(self, 3000):
            node = nodes.get(nid)
            if node is None:
                failed.append({"NodeId": nid, "Code": "NodeIdNotFound",
                               "Message": f"Node {nid} not found in cluster {cluster.cluster_name}."})
            elif node.status == "Pending":
                failed.append({"NodeId": nid, "Code": "InvalidNodeStatus",
                               "Message": f"Node {nid} is Pending."})
            else:
                del nodes[nid]
                for group in cluster.instance_groups:
                    if group["InstanceGroupName"] == node.instance_group_name:
                        group["CurrentCount"] = max(0, group.get("CurrentCount", 1) - 1)
                        group["TargetCount"] = max(0, group.get("TargetCount", 1) - 1)
                ok.append(nid)
        result = {"Successful": ok, "Failed": failed}
        return ActionResult({k: v for k, v in result.items() if v})


def patch_sagemaker():
    cls = sm_responses.SageMakerResponse
    cls.list_cluster_nodes = list_cluster_nodes
    cls.describe_cluster_node = describe_cluster_node
    cls.describe_cluster = describe_cluster
    cls.batch_replace_cluster_nodes = batch_replace_cluster_nodes
    cls.batch_reboot_cluster_nodes = batch_reboot_cluster_nodes
    cls.batch_delete_cluster_nodes = batch_delete_cluster_nodes


# --- WSGI front: test endpoints, throttling, reset --------------------------------------

def _json_response(start_response, status, body, headers=()):
    data = json.dumps(body).encode()
    start_response(status, [("Content-Type", "application/json"),
                            ("Content-Length", str(len(data))), *headers])
    return [data]


class Front:
    """Intercepts /hpk8s-moto/* and throttling before handing requests to moto."""

    def __init__(self, app):
        self.app = app

    def __call__(self, environ, start_response):
        path = environ.get("PATH_INFO", "")
        method = environ.get("REQUEST_METHOD", "GET")
        if path.startswith("/hpk8s-moto/"):
            return self.control(path, method, environ, start_response)
        if path == "/moto-api/reset" and method == "POST":
            with LOCK:
                STATE.update(throttle=0, throttle_ops=None, config=dict(DEFAULT_CONFIG),
                             node_errors={}, unsupported=set(), batch_calls=[], calls={},
                             deny=None, replaced=0)
        elif not path.startswith("/moto-api"):
            target = environ.get("HTTP_X_AMZ_TARGET", "")
            operation = target.rsplit(".", 1)[-1]
            with LOCK:
                if operation:
                    STATE["calls"][operation] = STATE["calls"].get(operation, 0) + 1
                ops = STATE["throttle_ops"]
                hit = STATE["throttle"] > 0 and (ops is None or operation in ops)
                if hit:
                    STATE["throttle"] -= 1
                deny = STATE["deny"]
                denied = False
                if deny and deny["operation"] == operation:
                    if deny["after"] > 0:
                        deny["after"] -= 1
                    elif deny["count"] > 0:
                        deny["count"] -= 1
                        denied = True
            if denied:
                data = json.dumps({"__type": "AccessDeniedException",
                                   "message": f"User: arn:aws:sts::111122223333:assumed-role/ops/x is not authorized to perform: sagemaker:{operation} on resource: cluster"}).encode()
                start_response("400 Bad Request", [
                    ("Content-Type", "application/x-amz-json-1.1"),
                    ("x-amzn-ErrorType", "AccessDeniedException"),
                    ("x-amzn-RequestId", "hpk8s-moto-denied"),
                    ("Content-Length", str(len(data)))])
                return [data]
            if hit:
                data = json.dumps({"__type": "ThrottlingException", "message": "Rate exceeded"}).encode()
                start_response("400 Bad Request", [
                    ("Content-Type", "application/x-amz-json-1.1"),
                    ("x-amzn-ErrorType", "ThrottlingException"),
                    ("x-amzn-RequestId", "hpk8s-moto-throttled"),
                    ("Content-Length", str(len(data)))])
                return [data]
        return self.app(environ, start_response)

    def control(self, path, method, environ, start_response):
        if method != "POST":
            return _json_response(start_response, "405 Method Not Allowed", {"error": "use POST"})
        try:
            length = int(environ.get("CONTENT_LENGTH") or 0)
            body = json.loads(environ["wsgi.input"].read(length) or b"{}")
            if path == "/hpk8s-moto/clusters":
                return _json_response(start_response, "200 OK", seed_cluster(body))
            if path == "/hpk8s-moto/throttle":
                with LOCK:
                    STATE["throttle"] = int(body.get("count", 1))
                    ops = body.get("operations")
                    STATE["throttle_ops"] = set(ops) if ops else None
                return _json_response(start_response, "200 OK", {"throttle": STATE["throttle"]})
            if path == "/hpk8s-moto/config":
                with LOCK:
                    unknown = set(body) - set(DEFAULT_CONFIG)
                    if unknown:
                        raise ValueError(f"unknown config keys {sorted(unknown)}")
                    STATE["config"].update({k: int(v) for k, v in body.items()})
                    return _json_response(start_response, "200 OK", STATE["config"])
            if path == "/hpk8s-moto/node-errors":
                with LOCK:
                    STATE["node_errors"] = {str(k): [str(i) for i in v] for k, v in body.items()}
                    return _json_response(start_response, "200 OK", STATE["node_errors"])
            if path == "/hpk8s-moto/unsupported":
                with LOCK:
                    STATE["unsupported"] = set(body.get("operations") or [])
                    return _json_response(start_response, "200 OK", sorted(STATE["unsupported"]))
            if path == "/hpk8s-moto/calls":
                with LOCK:
                    return _json_response(start_response, "200 OK", dict(STATE["calls"]))
            if path == "/hpk8s-moto/deny":
                with LOCK:
                    STATE["deny"] = {"operation": body["operation"], "after": int(body.get("after", 0)),
                                     "count": int(body.get("count", 1))}
                    return _json_response(start_response, "200 OK", STATE["deny"])
            if path == "/hpk8s-moto/instances":
                with LOCK:
                    backend_clusters = [c for b in _all_backends() for c in b.clusters.values()]
                    changed = []
                    for cluster in backend_clusters:
                        nodes = _hyperpod_nodes(cluster)
                        for nid, st in (body.get("status") or {}).items():
                            if nid in nodes:
                                nodes[nid].status = st[0]
                                nodes[nid].message = st[1] if len(st) > 1 else ""
                                changed.append(nid)
                        for nid in body.get("remove") or []:
                            if nodes.pop(nid, None) is not None:
                                changed.append(nid)
                    return _json_response(start_response, "200 OK", changed)
            if path == "/hpk8s-moto/batch-calls":
                with LOCK:
                    return _json_response(start_response, "200 OK", list(STATE["batch_calls"]))
            return _json_response(start_response, "404 Not Found", {"error": f"no endpoint {path}"})
        except Exception as e:  # a test's mistake: say what was wrong
            return _json_response(start_response, "400 Bad Request", {"error": str(e)})


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--port", type=int, required=True)
    parser.add_argument("--host", default="127.0.0.1")
    args = parser.parse_args()

    os.environ.setdefault("MOTO_PORT", str(args.port))
    patch_sagemaker()

    from werkzeug.serving import run_simple
    from moto.moto_server.werkzeug_app import DomainDispatcherApplication, create_backend_app

    app = DomainDispatcherApplication(create_backend_app)
    run_simple(args.host, args.port, Front(app), threaded=True)


if __name__ == "__main__":
    main()
