"""Runs in the eas-prediction venv (protobuf 3.20): calls a processor with the official SDK.

stdin: a JSON list of calls, each
  {"kind": "tf", "signature": "serving_default", "feeds": [{"name", "shape", "dtype", "values"}],
   "fetch": ["name"]}
  {"kind": "torch", "feeds": [{"index", "shape", "dtype", "values"}], "map_feeds": [{"name", ...}],
   "fetch": [0]}
  {"kind": "string", "body": "..."}
stdout: a JSON list of results: {"outputs": {name or index: {"shape", "values"}}} or
  {"error": code, "message": "..."}.
"""

import json
import sys

from eas_prediction import PredictClient, StringRequest, TFRequest, TorchRequest
from eas_prediction.exception import PredictException


def tf_call(client, call):
    req = TFRequest(call.get("signature", "serving_default"))
    for feed in call["feeds"]:
        values = feed["values"]
        if feed["dtype"] == "DT_STRING":
            values = [v.encode() for v in values]
        req.add_feed(feed["name"], feed["shape"], getattr(TFRequest, feed["dtype"]), values)
    for name in call.get("fetch", []):
        req.add_fetch(name)
    resp = client.predict(req)
    names = list(resp.response.outputs.keys())
    return {n: {"shape": resp.get_tensor_shape(n), "values": _plain(resp.get_values(n))} for n in names}


def torch_call(client, call):
    req = TorchRequest()
    for feed in call.get("feeds", []):
        req.add_feed(feed["index"], feed["shape"], getattr(TorchRequest, feed["dtype"]), feed["values"])
    for feed in call.get("map_feeds", []):
        req.add_feed_map(feed["name"], feed["shape"], getattr(TorchRequest, feed["dtype"]), feed["values"])
    for index in call.get("fetch", []):
        req.add_fetch(index)
    resp = client.predict(req)
    out = {
        str(i): {"shape": resp.get_tensor_shape(i), "values": _plain(resp.get_values(i))}
        for i in range(len(resp.response.outputs))
    }
    for name in resp.response.map_outputs:
        out["map:" + name] = {
            "shape": resp.get_tensor_shape_map(name),
            "values": _plain(resp.get_values_map(name)),
        }
    return out


def _plain(values):
    return [v.decode() if isinstance(v, bytes) else v for v in values]


def main():
    client = PredictClient(sys.argv[1], "svc")
    client.set_retry_count(1)
    client.init()
    results = []
    for call in json.load(sys.stdin):
        try:
            if call["kind"] == "tf":
                results.append({"outputs": tf_call(client, call)})
            elif call["kind"] == "torch":
                results.append({"outputs": torch_call(client, call)})
            else:
                resp = client.predict(StringRequest(call["body"]))
                results.append({"body": resp.response_data.decode()})
        except PredictException as exc:
            results.append({"error": exc.code, "message": str(exc.message)})
    json.dump(results, sys.stdout)


if __name__ == "__main__":
    main()
