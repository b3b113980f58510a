"""The Python `pusher` SDK, unmodified, driven by the Node tests: one JSON command on stdin, one JSON answer on
stdout. A request the server refuses is answered {"error": <status>, "message": ...}, so a test can assert the
status the SDK saw."""

import json
import sys

import pusher
from pusher import errors


def main():
    command = json.load(sys.stdin)
    app = command["app"]
    client = pusher.Pusher(
        app_id=app["id"],
        key=app["key"],
        secret=app["secret"],
        host=command["host"],
        port=command["port"],
        ssl=False,
    )
    op = command["op"]
    try:
        if op == "trigger":
            answer = client.trigger(command["channels"], command["event"], command["data"], command.get("socket_id"))
        elif op == "trigger_batch":
            answer = client.trigger_batch(command["batch"])
        elif op == "channels_info":
            answer = client.channels_info(command.get("prefix_filter"), command.get("attributes", []))
        elif op == "channel_info":
            answer = client.channel_info(command["channel"], command.get("attributes", []))
        elif op == "users_info":
            answer = client.users_info(command["channel"])
        elif op == "terminate_user_connections":
            answer = client.terminate_user_connections(command["user_id"])
        else:
            raise ValueError("unknown op " + op)
    except errors.PusherBadAuth as error:
        answer = {"error": 401, "message": str(error)}
    except errors.PusherBadRequest as error:
        answer = {"error": 400, "message": str(error)}
    except errors.PusherForbidden as error:
        answer = {"error": 403, "message": str(error)}
    except errors.PusherBadStatus as error:
        answer = {"error": "status", "message": str(error)}
    json.dump(answer, sys.stdout)


if __name__ == "__main__":
    main()
