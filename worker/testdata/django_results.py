"""A Django project with django-celery-results, as the Django app runs it.

Run with Debian's /usr/bin/python3 (python3-django, python3-celery,
python3-django-celery-results, python3-psycopg2).

  django_results.py migrate --db URL --schema S
      creates django-celery-results' tables in schema S with its own migrations
  django_results.py send --db URL --schema S --broker URL --task NAME [--args JSON]
      prints the task id (CELERY_RESULT_BACKEND = 'django-db')
  django_results.py get --db URL --schema S --broker URL --id ID [--timeout S]
      AsyncResult(id).get() through DatabaseBackend; prints
      {"state", "result", "exc_type", "message", "traceback"} as JSON
  django_results.py chord --db URL --schema S --broker URL
      sends chord([test.add(1, 2), test.add(3, 4)])(test.sum()); prints the body's id
  django_results.py store --db URL --schema S --broker URL --id ID
      DatabaseBackend.store_result of a SUCCESS (ID-ok) and a FAILURE (ID-fail)
  --extended (any command): result_extended = True; send takes --kwargs JSON,
      get also prints "name", "task_name", "args" and "kwargs", and store writes the
      request a worker named --hostname got for --task with --args/--kwargs
      (argsrepr and kwargsrepr as Celery's send_task makes them), with
      --result JSON as the SUCCESS
"""
import argparse
import json
import sys
from urllib.parse import urlparse


def setup_django(db_url, schema):
    import django
    from django.conf import settings

    u = urlparse(db_url)
    settings.configure(
        INSTALLED_APPS=["django_celery_results"],
        DATABASES={"default": {
            "ENGINE": "django.db.backends.postgresql",
            "NAME": u.path.lstrip("/"),
            "USER": u.username or "",
            "PASSWORD": u.password or "",
            "HOST": u.hostname or "",
            "PORT": str(u.port or 5432),
            "OPTIONS": {"options": "-c search_path=" + schema},
        }},
        USE_TZ=True,
        TIME_ZONE="UTC",
        DEFAULT_AUTO_FIELD="django.db.models.AutoField",
    )
    django.setup()


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("cmd", choices=["migrate", "send", "get", "store", "chord"])
    ap.add_argument("--db", required=True)
    ap.add_argument("--schema", required=True)
    ap.add_argument("--broker")
    ap.add_argument("--task")
    ap.add_argument("--args", default="[]")
    ap.add_argument("--kwargs", default="{}")
    ap.add_argument("--extended", action="store_true")
    ap.add_argument("--hostname")
    ap.add_argument("--result", default='"pong"')
    ap.add_argument("--id")
    ap.add_argument("--timeout", type=float, default=30)
    ns = ap.parse_args()
    setup_django(ns.db, ns.schema)
    if ns.cmd == "migrate":
        from django.core.management import call_command
        call_command("migrate", "django_celery_results", verbosity=0)
        return

    from celery import Celery
    app = Celery("django_app", broker=ns.broker)
    app.conf.result_backend = "django-db"
    app.conf.result_extended = ns.extended
    if ns.cmd == "store" and ns.extended:
        from celery.app.task import Context
        from celery.utils.saferepr import saferepr
        args, kwargs = json.loads(ns.args), json.loads(ns.kwargs)

        def request(task_id):
            return Context(id=task_id, task=ns.task, args=args, kwargs=kwargs, argsrepr=saferepr(args),
                           kwargsrepr=saferepr(kwargs), hostname=ns.hostname, children=[], properties={})
        app.backend.store_result(ns.id + "-ok", json.loads(ns.result), "SUCCESS", request=request(ns.id + "-ok"))
        app.backend.store_result(ns.id + "-fail", ValueError("boom"), "FAILURE", traceback="Traceback...",
                                 request=request(ns.id + "-fail"))
        return
    if ns.cmd == "store":
        # DatabaseBackend's own write, to compare rows with: a SUCCESS of
        # "pong" and a FAILURE of a ValueError.
        # request is what a Python worker passes: a task context, here with
        # no children.
        from celery.app.task import Context
        app.backend.store_result(ns.id + "-ok", "pong", "SUCCESS", request=Context(id=ns.id + "-ok", children=[]))
        app.backend.store_result(ns.id + "-fail", ValueError("boom"), "FAILURE", traceback="Traceback...",
                                 request=Context(id=ns.id + "-fail", children=[]))
        return
    if ns.cmd == "chord":
        # chord([test.add(1, 2), test.add(3, 4)])(test.sum()): DatabaseBackend
        # creates the ChordCounter; prints the body's id.
        from celery import chord
        header = [app.signature("test.add", args=(1, 2), queue="certmgr"),
                  app.signature("test.add", args=(3, 4), queue="certmgr")]
        print(chord(header)(app.signature("test.sum", queue="certmgr")).id)
        return
    if ns.cmd == "send":
        print(app.send_task(ns.task, args=json.loads(ns.args), kwargs=json.loads(ns.kwargs), queue="certmgr").id)
        sys.stdout.flush()
        return
    r = app.AsyncResult(ns.id)
    out = {"state": None, "result": None, "exc_type": None, "message": None, "traceback": None}
    try:
        value = r.get(timeout=ns.timeout, propagate=False, interval=0.1)
    except Exception as exc:
        out.update(state="TIMEOUT", exc_type=type(exc).__name__, message=str(exc))
        print(json.dumps(out))
        return
    out["state"] = r.state
    if ns.extended:
        # AsyncResult.name is None with DatabaseBackend (its meta names it
        # task_name): both are printed.
        out.update(name=r.name, task_name=r._get_task_meta().get("task_name"), args=r.args, kwargs=r.kwargs)
    out["traceback"] = r.traceback
    if isinstance(value, BaseException):
        out["exc_type"] = type(value).__name__
        out["message"] = str(value)
    else:
        out["result"] = value
    print(json.dumps(out))


if __name__ == "__main__":
    main()
