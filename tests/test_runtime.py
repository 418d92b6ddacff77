"""The custom resource runtime's failure paths, observed from outside a real bootstrap.

The probe (crates/custom-resource/examples/probe.rs) is a resource whose properties tell it to
fail, panic, hang or return too much; CloudFormation's side is the ResponseURL server here.
"""

import json
import time

import pytest

from lambda_harness import CloudFormation


@pytest.fixture
def probe(launch, runtime, responses):
    bootstrap = launch("probe", example=True)
    return bootstrap, CloudFormation(runtime, responses, "Custom::Probe", "Probe")


def ok_next(cfn) -> None:
    """After any failure the same process must serve the next event."""
    answer = cfn.create({"Name": "next"})
    assert answer["Status"] == "SUCCESS", answer
    assert answer["PhysicalResourceId"] == "probe-next"


def test_success_shape(probe):
    _, cfn = probe
    answer = cfn.create({"Name": "a", "Size": "12"})
    assert answer["Status"] == "SUCCESS"
    assert answer["Data"] == {"Name": "a"}
    assert answer["LogicalResourceId"] == "Probe"
    assert answer["_invocation"] == "response"


def test_event_of_the_wrong_shape(probe):
    _, cfn = probe
    event = cfn.event("Create", {"Name": "a"})
    event["RequestType"] = "Upsert"
    answer = cfn.send(event)
    assert answer["Status"] == "FAILED"
    assert "RequestType" in answer["Reason"] and "Upsert" in answer["Reason"]
    event = cfn.event("Create", {"Name": "a"})
    event["ResourceProperties"] = "not an object"
    answer = cfn.send(event)
    assert answer["Status"] == "FAILED" and "ResourceProperties" in answer["Reason"], answer
    ok_next(cfn)


def test_missing_and_ill_typed_properties(probe):
    _, cfn = probe
    answer = cfn.create({})
    assert answer["Status"] == "FAILED" and "missing field `Name`" in answer["Reason"]
    answer = cfn.create({"Name": "a", "Size": "lots"})
    assert answer["Status"] == "FAILED" and "ResourceProperties.Size" in answer["Reason"]
    ok_next(cfn)


def test_handler_error(probe):
    _, cfn = probe
    answer = cfn.create({"Name": "a", "Mode": "fail"})
    assert answer["Status"] == "FAILED"
    assert answer["Reason"].startswith("Create failed: probe failed as asked: mode=fail")
    assert answer["PhysicalResourceId"].startswith("create-failed:")
    ok_next(cfn)


def test_panic_is_answered_and_the_process_survives(probe):
    bootstrap, cfn = probe
    answer = cfn.create({"Name": "p", "Mode": "panic"})
    assert answer["Status"] == "FAILED"
    assert "the handler panicked: probe panicked as asked (p)" in answer["Reason"]
    ok_next(cfn)
    assert bootstrap.alive()
    # The panic is logged as a JSON line, not free text.
    assert any("panicked" in line and json.loads(line)["level"] == "ERROR" for line in bootstrap.stdout_lines())


def test_deadline_is_answered_in_time(probe):
    _, cfn = probe
    started = time.monotonic()
    answer = cfn.create({"Name": "s", "Mode": "sleep"}, deadline_s=3)
    elapsed = time.monotonic() - started
    assert answer["Status"] == "FAILED" and "did not finish within" in answer["Reason"]
    assert elapsed < 3, f"answered after the deadline ({elapsed:.1f} s)"
    # Cut short, the Create cannot clean up: the id it worked under goes to CloudFormation, so
    # the rollback's Delete reaches the handler (a create-failed id would skip it).
    assert answer["PhysicalResourceId"] == "probe-s", answer
    ok_next(cfn)


def test_oversized_data_is_failed_within_the_limit(probe):
    _, cfn = probe
    answer = cfn.create({"Name": "b", "Mode": "big", "Size": "5000"})
    assert answer["Status"] == "FAILED"
    assert "4096-byte limit" in answer["Reason"]
    assert answer["_bytes"] <= 4096
    ok_next(cfn)


def test_long_reason_is_truncated(probe):
    _, cfn = probe
    answer = cfn.create({"Name": "r", "Mode": "long-reason", "Size": "20000"})
    assert answer["Status"] == "FAILED"
    assert 3900 < answer["_bytes"] <= 4096
    assert "[truncated]" in answer["Reason"] and "log stream:" in answer["Reason"]


def test_no_echo(probe):
    _, cfn = probe
    answer = cfn.create({"Name": "n", "Mode": "no-echo"})
    assert answer["Status"] == "SUCCESS" and answer["NoEcho"] is True


def test_update_replacement_and_delete_of_failed_create(probe):
    _, cfn = probe
    same = cfn.update("probe-a", {"Name": "a"}, {"Name": "a"})
    assert same["PhysicalResourceId"] == "probe-a"
    replaced = cfn.update("probe-a", {"Name": "b"}, {"Name": "a"})
    assert replaced["Status"] == "SUCCESS" and replaced["PhysicalResourceId"] == "probe-b"
    failed_update = cfn.update("probe-a", {"Name": "a", "Mode": "fail"}, {"Name": "a"})
    assert failed_update["Status"] == "FAILED" and failed_update["PhysicalResourceId"] == "probe-a"
    failed = cfn.create({"Name": "x", "Mode": "fail"})
    # The Delete would fail too if it reached the handler (Mode=fail): it must not.
    deleted = cfn.delete(failed["PhysicalResourceId"], {"Name": "x", "Mode": "fail"})
    assert deleted["Status"] == "SUCCESS"


def test_response_put_is_retried(probe, responses):
    _, cfn = probe
    event = cfn.event("Create", {"Name": "retry"})
    responses.fail_first[event["RequestId"]] = [500, 503]
    answer = cfn.send(event)
    assert answer["Status"] == "SUCCESS"
    assert responses.attempts[event["RequestId"]] == 3
    # Pre-signed URLs are signed without a Content-Type: the PUT must send an empty one.
    assert all(h.get("Content-Type", "") == "" for h in responses.headers)


def test_refused_response_is_not_retried_by_lambda_and_serving_goes_on(probe, runtime, responses):
    """CloudFormation invokes custom resources asynchronously: an invocation error would make
    Lambda run the whole request again (twice), perhaps after the stack rolled back. A response
    that cannot be delivered is logged, and the invocation reported as done."""
    bootstrap, cfn = probe
    event = cfn.event("Create", {"Name": "refused"})
    responses.fail_first[event["RequestId"]] = [403]
    runtime.events.put((event["RequestId"] + "-inv", event, int((time.time() + 300) * 1000)))
    kind, _ = runtime._result(event["RequestId"] + "-inv").get(timeout=60)
    assert kind == "response"
    assert responses.attempts[event["RequestId"]] == 1
    assert "could not deliver the response to CloudFormation" in bootstrap.output()
    ok_next(cfn)


def test_a_duplicate_delivery_is_answered_without_redoing_the_work(probe, runtime, responses):
    bootstrap, cfn = probe
    event = cfn.event("Create", {"Name": "twice"})
    first = cfn.send(event)
    again = cfn.send(event)
    assert first["Status"] == again["Status"] == "SUCCESS"
    assert again["PhysicalResourceId"] == first["PhysicalResourceId"] == "probe-twice"
    assert again["Data"] == first["Data"]
    acted = [line for line in bootstrap.stdout_lines() if "probe acted" in line and "twice" in line]
    assert len(acted) == 1, acted
    assert "already answered" in bootstrap.output()


def test_a_deadline_sent_as_a_duration_is_read_from_now(probe, runtime, responses):
    """cargo lambda watch sends Lambda-Runtime-Deadline-Ms: 600000 (its timeout), not an epoch."""
    bootstrap, cfn = probe
    event = cfn.event("Create", {"Name": "watch"})
    runtime.events.put((event["RequestId"] + "-inv", event, 600000))
    answer = json.loads(responses.wait(event["RequestId"]))
    assert answer["Status"] == "SUCCESS", answer
    assert "not an epoch time" in bootstrap.output()


def test_a_delete_with_another_versions_properties_succeeds(probe):
    bootstrap, cfn = probe
    answer = cfn.delete("probe-old", {"Name": "old", "AddedInVersion9": {"x": 1}})
    assert answer["Status"] == "SUCCESS", answer
    assert "cannot read all the properties" in bootstrap.output()
    unreadable = cfn.delete("probe-old", {"Name": ["old"]})
    # The probe cannot recover Name from its id: the reason says how to finish the delete.
    assert unreadable["Status"] == "FAILED"
    assert "--retain-resources Probe" in unreadable["Reason"], unreadable


def test_event_without_response_url_is_an_invocation_error(probe, runtime):
    _, cfn = probe
    kind, body = runtime.invoke({"hello": "world"})
    assert kind == "error"
    assert "ResponseURL" in json.dumps(body)
    ok_next(cfn)
