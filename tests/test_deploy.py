"""The shipped deployment artefacts say what docs/operations.md promises."""

from pathlib import Path

import yaml

DEPLOY = Path(__file__).parent.parent / "deploy"


def manifests() -> dict[str, dict]:
    found = {}
    for path in DEPLOY.glob("*.yaml"):
        for document in yaml.safe_load_all(path.read_text()):
            found[document["kind"]] = document
    return found


def test_deployment_runs_several_replicas_with_health_probes():
    deployment = manifests()["Deployment"]
    assert deployment["spec"]["replicas"] >= 2
    container = deployment["spec"]["template"]["spec"]["containers"][0]
    assert container["readinessProbe"]["httpGet"]["path"] == "/readyz"
    assert container["livenessProbe"]["httpGet"]["path"] == "/healthz"
    assert container["envFrom"] == [{"secretRef": {"name": "tokensmith"}}]
    assert container["securityContext"]["readOnlyRootFilesystem"] is True


def test_secret_holds_the_database_url_and_the_key():
    secret = manifests()["Secret"]
    assert set(secret["stringData"]) == {"TOKENSMITH_DATABASE_URL", "TOKENSMITH_SECRET_KEY"}


def test_service_targets_the_deployment():
    found = manifests()
    selector = found["Service"]["spec"]["selector"]
    assert selector.items() <= found["Deployment"]["spec"]["template"]["metadata"]["labels"].items()


def test_dockerfile_serves_as_a_non_root_user():
    dockerfile = (DEPLOY.parent / "Dockerfile").read_text()
    assert "USER 10001" in dockerfile and '"serve"' in dockerfile


def test_deployment_runs_as_a_non_root_user_with_a_read_only_root_and_an_empty_dir_for_writes():
    pod = manifests()["Deployment"]["spec"]["template"]["spec"]
    assert pod["securityContext"]["runAsNonRoot"] is True and pod["securityContext"]["runAsUser"] != 0
    container = pod["containers"][0]
    assert container["securityContext"]["readOnlyRootFilesystem"] is True
    assert container["securityContext"]["allowPrivilegeEscalation"] is False
    data_dir = next(e["value"] for e in container["env"] if e["name"] == "TOKENSMITH_DATA_DIR")
    mounted = {m["mountPath"]: m["name"] for m in container["volumeMounts"]}
    volume = next(mounted[path] for path in mounted if data_dir.startswith(path))
    assert {"name": volume, "emptyDir": {}} in pod["volumes"]
