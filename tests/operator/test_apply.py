"""`KubeClient.apply`'s patch (pure): what differs is set, what an earlier apply set and this one
does not is removed, and what a server added around our fields is left alone."""

from __future__ import annotations

import json

from mopar.operator.kube import APPLIED, fieldset, merge_patch, recorded, with_record

SERVICE = {
    "apiVersion": "serving.knative.dev/v1",
    "kind": "Service",
    "metadata": {"name": "s", "namespace": "ns", "labels": {"a": "1"}},
    "spec": {"template": {"metadata": {"annotations": {"min": "1", "delay": "30s"}},
                          "spec": {"containers": [{"name": "c", "image": "i", "startupProbe": {"periodSeconds": 5}}]}}},
}  # fmt: skip


def _live(obj: dict) -> dict:
    """`obj` as a server keeps it: our record, and defaults of its own around our fields."""
    live = json.loads(json.dumps(with_record(obj)))
    live["metadata"].update(uid="u", resourceVersion="7", annotations={**live["metadata"]["annotations"], "k": "v"})
    live["spec"]["template"]["spec"]["containers"][0]["terminationMessagePath"] = "/dev/termination-log"
    live["spec"]["traffic"] = [{"latestRevision": True, "percent": 100}]
    live["status"] = {"url": "http://s"}
    return live


def test_nothing_to_do_when_the_server_only_added_its_own() -> None:
    assert merge_patch(_live(SERVICE), with_record(SERVICE), recorded(_live(SERVICE))) == {}


def test_a_field_no_longer_set_is_removed_with_null_and_the_record_follows() -> None:
    desired = json.loads(json.dumps(SERVICE))
    del desired["spec"]["template"]["metadata"]["annotations"]["delay"]
    live = _live(SERVICE)
    patch = merge_patch(live, with_record(desired), recorded(live))
    assert patch["spec"] == {"template": {"metadata": {"annotations": {"delay": None}}}}
    assert json.loads(patch["metadata"]["annotations"][APPLIED]) == fieldset(
        {k: v for k, v in desired.items() if k not in ("apiVersion", "kind")}
    )


def test_a_list_item_that_lost_a_field_is_replaced_whole() -> None:
    desired = json.loads(json.dumps(SERVICE))
    del desired["spec"]["template"]["spec"]["containers"][0]["startupProbe"]
    live = _live(SERVICE)
    patch = merge_patch(live, with_record(desired), recorded(live))
    assert patch["spec"]["template"]["spec"]["containers"] == desired["spec"]["template"]["spec"]["containers"]


def test_fields_someone_else_set_are_left_alone() -> None:
    live = _live(SERVICE)  # the server's traffic block, a stranger's annotation
    patch = merge_patch(live, with_record(SERVICE), recorded(live))
    assert "traffic" not in json.dumps(patch) and '"k"' not in json.dumps(patch)


def test_an_object_without_a_record_gets_one_and_keeps_the_rest() -> None:
    live = _live(SERVICE)
    del live["metadata"]["annotations"][APPLIED]
    patch = merge_patch(live, with_record(SERVICE), recorded(live))
    assert set(patch) == {"metadata"} and APPLIED in patch["metadata"]["annotations"]
