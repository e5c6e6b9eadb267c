"""Scans template.yaml with checkov and parliament; fails on any finding that
scan-exceptions.yaml does not accept, and on any accepted finding that no
longer occurs (so the list stays the template's, not history).

Run through scripts/scan-template.sh (which makes .venv-scan). Offline: the
SAM transform is applied locally (aws-sam-translator), checkov is told not
to download anything, and nothing here opens a connection.

The template is scanned twice, with every option on (SCAN_PARAMETERS: a
single destination with tags, a KMS key and an owner, document destinations
and their roles, a config writer), and again with the single destination
written through a role (DestinationRoleArn, which replaces the writer
role's own write statements), so every conditional statement is checked;
the findings of both are one list.
"""

import json
import os
import subprocess
import sys
import tempfile
from pathlib import Path

import yaml
import parliament
from parliament import analyze_policy_string, enhance_finding, override_config
from samtranslator.translator.transform import transform
from samtranslator.yaml_helper import yaml_parse

ROOT = Path(__file__).resolve().parent.parent
TEMPLATE = ROOT / "template.yaml"
EXCEPTIONS = ROOT / "scan-exceptions.yaml"

ACCOUNT_ID = "111122223333"
REGION = "us-east-1"
OTHER_ACCOUNT = "444455556666"
SCAN_PARAMETERS = {
    "ExportConfig": "s3://exportbucket/config/export.json",
    "ConfigWriterArn": f"arn:aws:iam::{ACCOUNT_ID}:role/config-admin",
    "DestinationBucket": "acme-exports",
    "DestinationPrefix": "events/",
    "DestinationRegion": "us-west-2",
    "DestinationTags": "team=data",
    "DestinationAccountId": OTHER_ACCOUNT,
    "DestinationEncryption": "aws:kms",
    "DestinationKmsKeyArn": f"arn:aws:kms:us-west-2:{OTHER_ACCOUNT}:key/1234abcd-12ab-34cd-56ef-1234567890ab",
    "ExtraDestinationBucketArns": "arn:aws:s3:::lake-a/events/*,arn:aws:s3:::lake-b/*",
    "ExtraDestinationRoleArns": f"arn:aws:iam::{OTHER_ACCOUNT}:role/lake-writes",
    "AlertEmail": "alerts@example.com",
}
THROUGH_A_ROLE = dict(
    SCAN_PARAMETERS,
    DestinationRoleArn=f"arn:aws:iam::{OTHER_ACCOUNT}:role/s3-export-writes",
    DestinationExternalId="acme-external-id",
)


class NoManagedPolicies:
    """The template names no AWS managed policy; nothing to look up."""

    def load(self):
        return {}


def transformed_template(parameters):
    """template.yaml after the SAM transform, its parameters' defaults set to
    `parameters` (checkov evaluates conditions with the defaults)."""
    template = yaml_parse(TEMPLATE.read_text())
    for name, value in parameters.items():
        template["Parameters"][name]["Default"] = value
    # The functions' code is built by `sam build`; the transform only needs
    # somewhere it could be.
    for resource in template["Resources"].values():
        if resource["Type"] == "AWS::Serverless::Function":
            resource["Properties"]["CodeUri"] = "s3://placeholder/function.zip"
    os.environ.setdefault("AWS_DEFAULT_REGION", REGION)
    return transform(template, dict(parameters), NoManagedPolicies())


def checkov_findings(template):
    """(check id, resource) of every failed checkov check."""
    with tempfile.TemporaryDirectory() as directory:
        path = Path(directory) / "template.json"
        path.write_text(json.dumps(template))
        environment = dict(
            os.environ,
            BC_SKIP_MAPPING="TRUE",
            CKV_SKIP_PACKAGE_UPDATE_CHECK="TRUE",
        )
        checkov = Path(sys.executable).parent / "checkov"
        run = subprocess.run(
            [
                str(checkov),
                "--file", str(path),
                "--framework", "cloudformation",
                "--skip-download",
                "--output", "json",
                "--quiet",
                "--soft-fail",
            ],
            capture_output=True,
            text=True,
            env=environment,
            check=False,
        )
    if run.returncode != 0:
        sys.exit(f"checkov failed ({run.returncode}):\n{run.stderr}")
    report = json.loads(run.stdout) if run.stdout.strip() else {}
    if report.get("summary", {}).get("parsing_errors"):
        sys.exit(f"checkov could not parse the template:\n{run.stdout}")
    failed = report.get("results", {}).get("failed_checks", [])
    return sorted(
        {(check["check_id"], check["resource"].split(".", 1)[1], check["check_name"]) for check in failed}
    )


class Stack:
    """Evaluates the intrinsics of the transformed template with
    SCAN_PARAMETERS, so each policy document is plain JSON for parliament.
    Resources' ARNs are made up in the shape of their type, so parliament
    can match actions to resource types."""

    ARN_SHAPES = {
        "AWS::S3::Bucket": "arn:aws:s3:::{name}",
        "AWS::SQS::Queue": "arn:aws:sqs:{region}:{account}:{name}",
        "AWS::Logs::LogGroup": "arn:aws:logs:{region}:{account}:log-group:/aws/lambda/{name}:*",
        "AWS::KMS::Key": "arn:aws:kms:{region}:{account}:key/{name}",
        "AWS::IAM::Role": "arn:aws:iam::{account}:role/{name}",
        "AWS::Lambda::Function": "arn:aws:lambda:{region}:{account}:function:{name}",
        "AWS::SNS::Topic": "arn:aws:sns:{region}:{account}:{name}",
    }

    def __init__(self, template):
        self.template = template
        self.parameters = {}
        for name, declaration in template.get("Parameters", {}).items():
            value = str(declaration.get("Default", ""))
            if declaration["Type"] == "CommaDelimitedList":
                value = value.split(",")
            self.parameters[name] = value

    def arn(self, logical_id):
        kind = self.template["Resources"][logical_id]["Type"]
        shape = self.ARN_SHAPES.get(kind, "arn:aws:unknown:{region}:{account}:{name}")
        return shape.format(region=REGION, account=ACCOUNT_ID, name=logical_id.lower())

    def ref(self, name):
        pseudo = {
            "AWS::Partition": "aws",
            "AWS::Region": REGION,
            "AWS::AccountId": ACCOUNT_ID,
            "AWS::URLSuffix": "amazonaws.com",
            "AWS::StackName": "s3-export",
        }
        if name in pseudo:
            return pseudo[name]
        if name in self.parameters:
            return self.parameters[name]
        if self.template["Resources"][name]["Type"] == "AWS::SNS::Topic":
            return self.arn(name)
        return name.lower()

    def condition(self, name):
        return self.eval(self.template["Conditions"][name])

    def eval(self, value):
        """The value; None stands for AWS::NoValue."""
        if isinstance(value, list):
            return [item for item in (self.eval(v) for v in value) if item is not None]
        if not isinstance(value, dict):
            return value
        if len(value) == 1:
            (name, argument), = value.items()
            if name == "Ref":
                return None if argument == "AWS::NoValue" else self.ref(argument)
            if name == "Condition":
                return self.condition(argument)
            if name == "Fn::GetAtt":
                resource, attribute = argument if isinstance(argument, list) else argument.split(".", 1)
                return self.arn(resource) if attribute == "Arn" else f"{resource.lower()}-{attribute.lower()}"
            if name == "Fn::If":
                condition, then, otherwise = argument
                return self.eval(then if self.condition(condition) else otherwise)
            if name == "Fn::Equals":
                left, right = self.eval(argument)
                return str(left) == str(right)
            if name == "Fn::Not":
                return not self.eval(argument[0])
            if name == "Fn::And":
                return all(self.eval(v) for v in argument)
            if name == "Fn::Or":
                return any(self.eval(v) for v in argument)
            if name == "Fn::Join":
                return argument[0].join(str(v) for v in self.eval(argument[1]))
            if name == "Fn::Sub":
                return self.substitute(argument)
        evaluated = {k: self.eval(v) for k, v in value.items()}
        return {k: v for k, v in evaluated.items() if v is not None}

    def substitute(self, argument):
        text, variables = (argument, {}) if isinstance(argument, str) else argument
        out, rest = "", text
        while "${" in rest:
            start = rest.index("${")
            end = rest.index("}", start)
            out += rest[:start]
            name = rest[start + 2 : end]
            if name.startswith("!"):
                out += "${" + name[1:] + "}"
            elif name in variables:
                out += str(self.eval(variables[name]))
            elif "." in name:
                out += str(self.eval({"Fn::GetAtt": name}))
            else:
                out += str(self.ref(name))
            rest = rest[end + 1 :]
        return out + rest

    def policy_documents(self):
        """(where, document) of every IAM policy document the stack makes:
        identity policies and the resource policies of buckets, keys,
        topics and queues."""
        documents = []
        for logical_id, resource in self.template["Resources"].items():
            condition = resource.get("Condition")
            if condition and not self.condition(condition):
                continue
            properties = self.eval(resource.get("Properties", {}))
            kind = resource["Type"]
            if kind == "AWS::IAM::Role":
                for policy in properties.get("Policies", []):
                    documents.append((f"{logical_id}/{policy['PolicyName']}", policy["PolicyDocument"]))
            elif kind in ("AWS::IAM::RolePolicy", "AWS::IAM::Policy", "AWS::IAM::ManagedPolicy"):
                documents.append((logical_id, properties["PolicyDocument"]))
            elif kind in ("AWS::S3::BucketPolicy", "AWS::SNS::TopicPolicy", "AWS::SQS::QueuePolicy"):
                documents.append((logical_id, properties["PolicyDocument"]))
            elif kind == "AWS::KMS::Key":
                documents.append((logical_id, properties["KeyPolicy"]))
        return documents


def parliament_findings(template):
    """(issue, policy/statement, detail) of every parliament finding of LOW
    severity or more."""
    # As `parliament --include-community-auditors` does: their findings'
    # severities are in their own configuration.
    override_config(Path(parliament.__file__).parent / "community_auditors" / "config_override.yaml")
    findings = set()
    for where, document in Stack(template).policy_documents():
        # Statement by statement, so an accepted finding names its statement
        # and a new statement in the same policy is checked on its own.
        statements = document["Statement"]
        for index, statement in enumerate(statements if isinstance(statements, list) else [statements]):
            place = f"{where}/{statement.get('Sid', index)}"
            single = dict(document, Statement=[statement])
            policy = analyze_policy_string(json.dumps(single), place, include_community_auditors=True)
            for finding in policy.findings:
                finding = enhance_finding(finding)
                if finding.severity in ("MUTE", "INFO"):
                    continue
                findings.add((finding.issue, place, str(finding.detail)))
    return sorted(findings)


def main():
    accepted = yaml.safe_load(EXCEPTIONS.read_text()) or {}
    templates = [transformed_template(parameters) for parameters in (SCAN_PARAMETERS, THROUGH_A_ROLE)]
    problems = []

    accepted_checkov = {
        (entry["check"], entry["resource"]): entry for entry in accepted.get("checkov", [])
    }
    found_checkov = sorted({finding for template in templates for finding in checkov_findings(template)})
    for check, resource, title in found_checkov:
        if (check, resource) not in accepted_checkov:
            problems.append(f"checkov {check} on {resource}: {title}")
    seen = {(check, resource) for check, resource, _ in found_checkov}
    for key in accepted_checkov:
        if key not in seen:
            problems.append(f"checkov {key[0]} on {key[1]} is accepted in {EXCEPTIONS.name} but no longer found: remove it")

    accepted_parliament = {
        (entry["issue"], entry["policy"]): entry for entry in accepted.get("parliament", [])
    }
    found_parliament = sorted({finding for template in templates for finding in parliament_findings(template)})
    for issue, where, detail in found_parliament:
        if (issue, where) not in accepted_parliament:
            problems.append(f"parliament {issue} in {where}: {detail}")
    seen = {(issue, where) for issue, where, _ in found_parliament}
    for key in accepted_parliament:
        if key not in seen:
            problems.append(f"parliament {key[0]} in {key[1]} is accepted in {EXCEPTIONS.name} but no longer found: remove it")

    for entry in list(accepted_checkov.values()) + list(accepted_parliament.values()):
        if not str(entry.get("reason", "")).strip():
            problems.append(f"{entry} in {EXCEPTIONS.name} has no reason")

    print(
        f"checkov: {len(found_checkov)} findings, parliament: {len(found_parliament)} findings, "
        f"{len(accepted_checkov) + len(accepted_parliament)} accepted in {EXCEPTIONS.name}"
    )
    if problems:
        print("template scan: findings not accepted in scan-exceptions.yaml (fix them, or accept them there with a reason):")
        for problem in problems:
            print(f"  - {problem}")
        sys.exit(1)
    print("template scan: every finding is accepted with a reason")


if __name__ == "__main__":
    main()
