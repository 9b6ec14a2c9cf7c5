# What `helm test` runs: each URL must answer 200 (the operator's health, a model's V2 readiness).
import os
import sys
import urllib.error
import urllib.request


def answers(what, url):
    try:
        with urllib.request.urlopen(url, timeout=10) as response:
            status = response.status
    except urllib.error.HTTPError as error:
        status = error.code
    except OSError as error:
        print(f"{what}: {url}: {error}")
        return False
    print(f"{what}: {url}: {status}")
    return status == 200


checks = [("operator", os.environ["OPERATOR_URL"])]
if os.environ.get("MODEL_URL"):
    checks.append(("model", os.environ["MODEL_URL"]))
results = [answers(what, url) for what, url in checks]
sys.exit(0 if all(results) else 1)
