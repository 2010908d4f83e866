import json, os, subprocess
from conftest import HOST_PLATFORM, Images
def test_explore(mlfs, mlfs_env, demo, single):
    for p, info in demo.index["platforms"]:
        print(p, info["digest"], [(l["digest"][:19], l["size"]) for l in info["layers"]])
    for p, info in demo.list["platforms"]:
        print("list", p, info["digest"], [(l["digest"][:19], l["size"]) for l in info["layers"]])
    print("single oci", single.oci["layers"], single.v2s2["layers"])
    r = mlfs("pull", demo.ref("demo:latest"))
    print(r)
    r = mlfs("pull", "--platform", "linux/s390x", demo.ref("demo:latest"))
    print(r)
    print(subprocess.run(["find", mlfs_env["MLFS_CACHE"], "-ls"], capture_output=True, text=True).stdout)
    print(mlfs("cache", "ls").stdout)
    print(mlfs("cache", "ls", "--json").stdout)
    print(mlfs("cache", "du").stdout)
    print(mlfs("cache", "du", "--json").stdout)
    print(mlfs("cache", "verify"))
    print(mlfs("cache", "gc"))
    assert 0
