//! The SAM template as a deployed stack would see it, for tests over its
//! policies: `template.yaml` read into CloudFormation's JSON form (short
//! tags such as `!If` become `{"Fn::If": …}`), then evaluated for a set of
//! parameter values (parameters, conditions, `Fn::If`, `Fn::Sub`,
//! `Fn::Join`, `Ref`, `Fn::GetAtt`), so a test reads the statements one
//! option set really creates, not the template's text.
//!
//! Placeholders stand for what only a deployment knows: `Ref` of a resource
//! is its logical id in lower case (`ExportBucket` -> `exportbucket`, a
//! valid bucket name), `Fn::GetAtt` is `<LogicalId>.<Attribute>`
//! (`ExportBucket.Arn`), and the pseudo parameters are fixed
//! ([`ACCOUNT_ID`], [`REGION`], partition `aws`).

use std::collections::BTreeMap;

use serde_json::{Map, Value, json};
use yaml_rust2::parser::{Event, MarkedEventReceiver, Parser, Tag};
use yaml_rust2::scanner::{Marker, TScalarStyle};

/// `AWS::AccountId` of the evaluated stack.
pub const ACCOUNT_ID: &str = "111122223333";
/// `AWS::Region` of the evaluated stack.
pub const REGION: &str = "us-east-1";

/// The repository's `template.yaml`, in CloudFormation's JSON form.
pub fn load() -> Value {
    let text =
        std::fs::read_to_string(concat!(env!("CARGO_MANIFEST_DIR"), "/template.yaml")).unwrap();
    from_yaml(&text)
}

/// Reads a CloudFormation YAML document into JSON, writing each short-form
/// intrinsic tag (`!Ref x`, `!GetAtt a.b`, `!Sub …`) in its long form.
pub fn from_yaml(text: &str) -> Value {
    let mut builder = Builder::default();
    Parser::new_from_str(text)
        .load(&mut builder, false)
        .expect("template.yaml is YAML");
    builder.done.expect("template.yaml holds a document")
}

/// Builds JSON from the parser's events; `stack` holds the open containers
/// (with their tags, applied when they close) and a mapping's pending key.
#[derive(Default)]
struct Builder {
    stack: Vec<(Value, Option<Tag>, Option<String>)>,
    done: Option<Value>,
}

impl Builder {
    fn push_value(&mut self, value: Value) {
        match self.stack.last_mut() {
            None => self.done = Some(value),
            Some((Value::Array(items), _, _)) => items.push(value),
            Some((Value::Object(map), _, key)) => match key.take() {
                None => *key = Some(value.as_str().expect("mapping keys are text").to_owned()),
                Some(key) => {
                    map.insert(key, value);
                }
            },
            Some(_) => unreachable!("only containers are open"),
        }
    }
}

/// `!Ref x` -> `{"Ref": x}`, `!GetAtt a.b` -> `{"Fn::GetAtt": [a, b]}`,
/// `!Condition c` -> `{"Condition": c}`, `!Name v` -> `{"Fn::Name": v}`.
fn tagged(tag: Option<Tag>, value: Value) -> Value {
    let Some(tag) = tag.filter(|tag| tag.handle == "!") else {
        return value;
    };
    match tag.suffix.as_str() {
        "Ref" | "Condition" => json!({ tag.suffix: value }),
        "GetAtt" => match value.as_str().and_then(|text| text.split_once('.')) {
            Some((resource, attribute)) => json!({ "Fn::GetAtt": [resource, attribute] }),
            None => json!({ "Fn::GetAtt": value }),
        },
        name => json!({ format!("Fn::{name}"): value }),
    }
}

impl MarkedEventReceiver for Builder {
    fn on_event(&mut self, event: Event, _: Marker) {
        match event {
            Event::Scalar(text, style, _, tag) => {
                let value = match style {
                    TScalarStyle::Plain if tag.is_none() => match text.as_str() {
                        "true" => Value::Bool(true),
                        "false" => Value::Bool(false),
                        number => number
                            .parse::<i64>()
                            .map_or_else(|_| Value::String(text.clone()), Value::from),
                    },
                    _ => Value::String(text),
                };
                self.push_value(tagged(tag, value));
            }
            Event::SequenceStart(_, tag) => self.stack.push((json!([]), tag, None)),
            Event::MappingStart(_, tag) => self.stack.push((json!({}), tag, None)),
            Event::SequenceEnd | Event::MappingEnd => {
                let (value, tag, _) = self.stack.pop().expect("a container is open");
                self.push_value(tagged(tag, value));
            }
            _ => {}
        }
    }
}

/// The template deployed with some parameters set (the others at their
/// defaults).
pub struct Stack<'a> {
    template: &'a Value,
    parameters: BTreeMap<String, Value>,
}

impl<'a> Stack<'a> {
    /// `template` with `overrides` (name, value) and defaults for the rest;
    /// a `CommaDelimitedList` is split on commas, as CloudFormation does.
    pub fn new(template: &'a Value, overrides: &[(&str, &str)]) -> Self {
        let declared = template["Parameters"].as_object().unwrap();
        for (name, _) in overrides {
            assert!(declared.contains_key(*name), "no parameter {name}");
        }
        let parameters = declared
            .iter()
            .map(|(name, declaration)| {
                let text = overrides
                    .iter()
                    .find(|(overridden, _)| overridden == name)
                    .map(|(_, value)| (*value).to_owned())
                    .unwrap_or_else(|| match &declaration["Default"] {
                        Value::String(text) => text.clone(),
                        Value::Null => String::new(),
                        other => other.to_string(),
                    });
                let value = if declaration["Type"] == "CommaDelimitedList" {
                    json!(text.split(',').collect::<Vec<_>>())
                } else {
                    json!(text)
                };
                (name.clone(), value)
            })
            .collect();
        Self {
            template,
            parameters,
        }
    }

    /// Whether the template's condition `name` holds.
    pub fn condition(&self, name: &str) -> bool {
        let definition = &self.template["Conditions"][name];
        assert!(!definition.is_null(), "no condition {name}");
        self.eval(definition).and_then(|v| v.as_bool()).unwrap()
    }

    /// The resources this stack creates (their `Condition` holds), with
    /// their properties evaluated: `(logical id, type, properties)`.
    pub fn resources(&self) -> Vec<(String, String, Value)> {
        self.template["Resources"]
            .as_object()
            .unwrap()
            .iter()
            .filter(|(_, resource)| {
                resource["Condition"]
                    .as_str()
                    .is_none_or(|c| self.condition(c))
            })
            .map(|(id, resource)| {
                let properties = self.eval(&resource["Properties"]).unwrap_or(Value::Null);
                (
                    id.clone(),
                    resource["Type"].as_str().unwrap().to_owned(),
                    properties,
                )
            })
            .collect()
    }

    /// The properties of resource `id`, `None` when the stack does not
    /// create it.
    pub fn resource(&self, id: &str) -> Option<Value> {
        self.resources()
            .into_iter()
            .find(|(logical, _, _)| logical == id)
            .map(|(_, _, properties)| properties)
    }

    /// The value of output `name`, `None` when the stack has no such output.
    pub fn output(&self, name: &str) -> Option<Value> {
        let output = &self.template["Outputs"][name];
        if output.is_null()
            || output["Condition"]
                .as_str()
                .is_some_and(|c| !self.condition(c))
        {
            return None;
        }
        self.eval(&output["Value"])
    }

    /// The environment variables of function `id`, as its process sees them.
    pub fn environment(&self, id: &str) -> BTreeMap<String, String> {
        let properties = self.resource(id).unwrap();
        properties["Environment"]["Variables"]
            .as_object()
            .unwrap()
            .iter()
            .map(|(name, value)| {
                let text = match value {
                    Value::String(text) => text.clone(),
                    other => other.to_string(),
                };
                (name.clone(), text)
            })
            .collect()
    }

    /// Every statement of every identity policy attached to role `role`
    /// (its inline `Policies`, `AWS::IAM::RolePolicy` and `AWS::IAM::Policy`
    /// resources naming it).
    pub fn role_statements(&self, role: &str) -> Vec<Value> {
        let reference = json!(role.to_lowercase());
        let mut documents = Vec::new();
        for (id, kind, properties) in self.resources() {
            match kind.as_str() {
                "AWS::IAM::Role" if id == role => {
                    for policy in properties["Policies"].as_array().into_iter().flatten() {
                        documents.push(policy["PolicyDocument"].clone());
                    }
                }
                "AWS::IAM::RolePolicy" if properties["RoleName"] == reference => {
                    documents.push(properties["PolicyDocument"].clone());
                }
                "AWS::IAM::Policy"
                    if properties["Roles"]
                        .as_array()
                        .is_some_and(|roles| roles.contains(&reference)) =>
                {
                    documents.push(properties["PolicyDocument"].clone());
                }
                _ => {}
            }
        }
        documents
            .iter()
            .flat_map(|document| {
                document["Statement"]
                    .as_array()
                    .cloned()
                    .unwrap_or_default()
            })
            .collect()
    }

    /// Evaluates an expression; `None` is `AWS::NoValue` (the key or item is
    /// left out).
    pub fn eval(&self, value: &Value) -> Option<Value> {
        match value {
            Value::Array(items) => Some(Value::Array(
                items.iter().filter_map(|item| self.eval(item)).collect(),
            )),
            Value::Object(map) if map.len() == 1 => {
                let (name, argument) = map.iter().next().unwrap();
                self.intrinsic(name, argument).unwrap_or_else(|| {
                    Some(Value::Object(
                        map.iter()
                            .filter_map(|(k, v)| Some((k.clone(), self.eval(v)?)))
                            .collect::<Map<_, _>>(),
                    ))
                })
            }
            Value::Object(map) => Some(Value::Object(
                map.iter()
                    .filter_map(|(k, v)| Some((k.clone(), self.eval(v)?)))
                    .collect(),
            )),
            scalar => Some(scalar.clone()),
        }
    }

    /// `Some(result)` when `name` is an intrinsic this evaluator knows.
    fn intrinsic(&self, name: &str, argument: &Value) -> Option<Option<Value>> {
        let list = |value: &Value| -> Vec<Value> {
            match self.eval(value) {
                Some(Value::Array(items)) => items,
                other => panic!("{name} wants a list, got {other:?}"),
            }
        };
        let truth = |value: &Value| self.eval(value).and_then(|v| v.as_bool()).unwrap();
        Some(match name {
            "Ref" => self.reference(argument.as_str().unwrap()),
            "Condition" => Some(json!(self.condition(argument.as_str().unwrap()))),
            "Fn::GetAtt" => {
                let parts = argument.as_array().unwrap();
                Some(json!(format!(
                    "{}.{}",
                    parts[0].as_str().unwrap(),
                    parts[1].as_str().unwrap()
                )))
            }
            "Fn::If" => {
                let [condition, then, otherwise] = argument.as_array().unwrap().as_slice() else {
                    panic!("Fn::If takes three arguments");
                };
                if self.condition(condition.as_str().unwrap()) {
                    self.eval(then)
                } else {
                    self.eval(otherwise)
                }
            }
            "Fn::Equals" => {
                let both = list(argument);
                Some(json!(as_text(&both[0]) == as_text(&both[1])))
            }
            "Fn::Not" => Some(json!(!truth(&argument[0]))),
            "Fn::And" => Some(json!(argument.as_array().unwrap().iter().all(truth))),
            "Fn::Or" => Some(json!(argument.as_array().unwrap().iter().any(truth))),
            "Fn::Contains" => {
                let both = list(argument);
                let needle = as_text(&both[1]);
                Some(json!(
                    both[0]
                        .as_array()
                        .unwrap()
                        .iter()
                        .any(|v| as_text(v) == needle)
                ))
            }
            "Fn::Join" => {
                let separator = argument[0].as_str().unwrap();
                let items: Vec<String> = list(&argument[1]).iter().map(as_text).collect();
                Some(json!(items.join(separator)))
            }
            "Fn::Sub" => Some(json!(self.substitute(argument))),
            _ => return None,
        })
    }

    fn reference(&self, name: &str) -> Option<Value> {
        match name {
            "AWS::NoValue" => None,
            "AWS::Partition" => Some(json!("aws")),
            "AWS::Region" => Some(json!(REGION)),
            "AWS::AccountId" => Some(json!(ACCOUNT_ID)),
            "AWS::URLSuffix" => Some(json!("amazonaws.com")),
            "AWS::StackName" => Some(json!("s3-export")),
            parameter if self.parameters.contains_key(parameter) => {
                Some(self.parameters[parameter].clone())
            }
            resource => {
                assert!(
                    !self.template["Resources"][resource].is_null(),
                    "Ref of unknown {resource}"
                );
                Some(json!(resource.to_lowercase()))
            }
        }
    }

    /// `Fn::Sub`: `${Name}` is a variable of its map, a parameter, a pseudo
    /// parameter or a resource's `Ref`; `${Resource.Attribute}` its
    /// `Fn::GetAtt`; `${!Literal}` stays `${Literal}`.
    fn substitute(&self, argument: &Value) -> String {
        let (text, variables) = match argument {
            Value::String(text) => (text.as_str(), Map::new()),
            Value::Array(parts) => (
                parts[0].as_str().unwrap(),
                parts[1].as_object().cloned().unwrap_or_default(),
            ),
            other => panic!("Fn::Sub of {other}"),
        };
        let mut out = String::new();
        let mut rest = text;
        while let Some(start) = rest.find("${") {
            out.push_str(&rest[..start]);
            let end = rest[start..].find('}').expect("a closed ${…}") + start;
            let name = &rest[start + 2..end];
            if let Some(literal) = name.strip_prefix('!') {
                out.push_str(&format!("${{{literal}}}"));
            } else if let Some(value) = variables.get(name) {
                out.push_str(&as_text(&self.eval(value).unwrap()));
            } else if let Some((resource, attribute)) = name.split_once('.') {
                out.push_str(&format!("{resource}.{attribute}"));
            } else {
                out.push_str(&as_text(&self.reference(name).unwrap()));
            }
            rest = &rest[end + 1..];
        }
        out.push_str(rest);
        out
    }
}

/// A scalar as CloudFormation compares it: text.
fn as_text(value: &Value) -> String {
    match value {
        Value::String(text) => text.clone(),
        other => other.to_string(),
    }
}

/// The list a policy field holds, whether written as one string or a list.
pub fn strings(value: &Value) -> Vec<String> {
    match value {
        Value::String(one) => vec![one.clone()],
        Value::Array(items) => items.iter().map(as_text).collect(),
        Value::Null => Vec::new(),
        other => panic!("not a policy list: {other}"),
    }
}

/// The actions `statements` allow on exactly `resource`, sorted.
pub fn allowed_actions(statements: &[Value], resource: &str) -> Vec<String> {
    let mut actions: Vec<String> = statements
        .iter()
        .filter(|s| s["Effect"] == "Allow")
        .filter(|s| strings(&s["Resource"]).iter().any(|r| r == resource))
        .flat_map(|s| strings(&s["Action"]))
        .collect();
    actions.sort();
    actions.dedup();
    actions
}

mod policies;
