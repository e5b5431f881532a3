"""More of Modal's surface: FilePatternMatcher and Path predicates for add_local_dir's ignore=,
a .dockerignore under from_dockerfile, Secret.objects, Secret.from_dotenv, SchedulerPlacement
accepted, and the objects gust refuses (CloudBucketMount, NetworkFileSystem, Proxy).
test_smallgaps.py runs it with SMALLGAPS_DIR naming a directory of files to add and
SMALLGAPS_SECRET the name of a secret to create."""
import os

import gust as modal

app = modal.App("smallgaps-more")
DIR = os.environ.get("SMALLGAPS_DIR", "/nonexistent")
SECRET = os.environ.get("SMALLGAPS_SECRET", "smallgaps-more")

matched = modal.Image.debian_slim().add_local_dir(
    DIR, "/data", ignore=modal.FilePatternMatcher("**/*.log", "!keep.log", "build"))
predicate = modal.Image.debian_slim().add_local_dir(DIR, "/data", ignore=lambda p: p.suffix == ".log" or p.name == "build")
dockerfile = (modal.Image.from_dockerfile(os.path.join(DIR, "Dockerfile"), context_dir=DIR) if modal.is_local()
              else modal.Image.debian_slim())


def tree():
    out = []
    for root, _, files in os.walk("/data"):
        out += [os.path.relpath(os.path.join(root, f), "/data") for f in files]
    return sorted(out)


@app.function(image=matched)
def with_matcher():
    return tree()


@app.function(image=predicate, scheduler_placement=modal.SchedulerPlacement(region="us-east-1"))
def with_predicate():
    return tree()


@app.function(image=dockerfile)
def with_dockerignore():
    return tree()


@app.function(secrets=[modal.Secret.from_name(SECRET), modal.Secret.from_dotenv(DIR)])
def read_env():
    return os.environ.get("STORED"), os.environ.get("FROM_DOTENV"), os.environ.get("QUOTED")


@app.local_entrypoint()
def main():
    print("RESULT matcher", with_matcher.remote())
    print("RESULT predicate", with_predicate.remote())
    print("RESULT dockerignore", with_dockerignore.remote())
    print("RESULT env", read_env.remote())
    try:
        modal.Secret.objects.create(SECRET, {"STORED": "again"})
        print("RESULT again none")
    except modal.exception.AlreadyExistsError:
        print("RESULT again AlreadyExistsError")
    modal.Secret.objects.create(SECRET, {"STORED": "again"}, allow_existing=True)
    print("RESULT listed", SECRET in [s.name for s in modal.Secret.objects.list()])
    modal.Secret.objects.delete(SECRET)
    modal.Secret.objects.delete(SECRET, allow_missing=True)
    try:
        modal.Secret.objects.delete(SECRET)
        print("RESULT deleted_twice none")
    except modal.exception.NotFoundError:
        print("RESULT deleted_twice NotFoundError")
    refused = []
    for make in (lambda: modal.CloudBucketMount("bucket"), lambda: modal.NetworkFileSystem.from_name("nfs"),
                 lambda: modal.Proxy.from_name("p")):
        try:
            make()
            refused.append("none")
        except modal.exception.InvalidError as e:
            refused.append("not available on gust" in str(e))
    print("RESULT refused", refused)
