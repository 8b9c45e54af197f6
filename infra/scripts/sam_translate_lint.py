"""Expands template.yaml with aws-sam-translator (offline) and runs cfn-lint on the result.

Plain `sam validate --lint` and cfn-lint do not expand SAM resources, so a dangling !Ref or
!GetAtt inside a function's properties passes them; after the translation cfn-lint sees it.
Usage: python sam_translate_lint.py template.yaml
"""

import json
import os
import subprocess
import sys
import tempfile

from samtranslator.parser.parser import Parser
from samtranslator.translator.transform import transform
from samtranslator.yaml_helper import yaml_parse


def main(path: str) -> int:
    os.environ.setdefault("AWS_DEFAULT_REGION", "us-east-1")
    with open(path, encoding="utf-8") as f:
        template = yaml_parse(f.read())
    # Local CodeUri folders become S3 placeholders, as `sam validate` does.
    for resource in template.get("Resources", {}).values():
        if resource.get("Type") == "AWS::Serverless::Function":
            props = resource.setdefault("Properties", {})
            if isinstance(props.get("CodeUri"), str):
                props["CodeUri"] = "s3://placeholder-bucket/placeholder-key.zip"
    expanded = transform(template, {}, None, Parser())
    with tempfile.NamedTemporaryFile("w", suffix=".json", delete=False) as out:
        json.dump(expanded, out)
        expanded_path = out.name
    try:
        return subprocess.run(
            [os.path.join(os.path.dirname(sys.executable), "cfn-lint"), expanded_path],
            check=False,
        ).returncode
    finally:
        os.unlink(expanded_path)


if __name__ == "__main__":
    sys.exit(main(sys.argv[1] if len(sys.argv) > 1 else "template.yaml"))
