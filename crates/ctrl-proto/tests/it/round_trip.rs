//! Every message of ctrl.v1, with every field set (and each member of every
//! oneof in turn), is built dynamically from the descriptor, decoded into the
//! generated Rust type and encoded again without losing anything; its JSON
//! (pbjson, what Connect speaks) equals the canonical protobuf JSON mapping.

use anyhow::{Context, Result, ensure};
use prost::Message;
use prost_reflect::{
    DescriptorPool, DynamicMessage, FieldDescriptor, Kind, MapKey, MessageDescriptor, Value,
};
use serde::Serialize;
use serde::de::DeserializeOwned;

fn pool() -> DescriptorPool {
    DescriptorPool::decode(ctrl_proto::FILE_DESCRIPTOR_SET).expect("a valid descriptor set")
}

/// A non-default value for a singular field of this kind.
fn sample(kind: &Kind, field: &FieldDescriptor, variant: usize, depth: usize) -> Value {
    match kind {
        Kind::String => Value::String(format!("{}-é✓", field.name())),
        Kind::Bytes => Value::Bytes(vec![0, 1, 254, 255].into()),
        Kind::Bool => Value::Bool(true),
        Kind::Int32 | Kind::Sint32 | Kind::Sfixed32 => Value::I32(-7),
        Kind::Int64 | Kind::Sint64 | Kind::Sfixed64 => Value::I64(-(1 << 40)),
        Kind::Uint32 | Kind::Fixed32 => Value::U32(7),
        Kind::Uint64 | Kind::Fixed64 => Value::U64(u64::MAX),
        Kind::Float => Value::F32(1.5),
        Kind::Double => Value::F64(2.25),
        Kind::Enum(e) => Value::EnumNumber(e.values().last().expect("enum has values").number()),
        Kind::Message(m) => Value::Message(populated(m, variant, depth.saturating_sub(1))),
    }
}

/// `desc` with every field set; in each oneof, member `variant % len`.
fn populated(desc: &MessageDescriptor, variant: usize, depth: usize) -> DynamicMessage {
    let mut message = DynamicMessage::new(desc.clone());
    if depth == 0 {
        return message;
    }
    for field in desc.fields() {
        if let Some(oneof) = field.containing_oneof() {
            let members: Vec<_> = oneof.fields().collect();
            if members[variant % members.len()].number() != field.number() {
                continue;
            }
        }
        let value = if field.is_map() {
            let Kind::Message(entry) = field.kind() else {
                unreachable!("maps are messages")
            };
            let value_field = entry.map_entry_value_field();
            let value = sample(&value_field.kind(), &value_field, variant, depth);
            Value::Map(
                [(MapKey::String("key-1".into()), value)]
                    .into_iter()
                    .collect(),
            )
        } else if field.is_list() {
            Value::List(vec![
                sample(&field.kind(), &field, variant, depth),
                sample(&field.kind(), &field, variant + 1, depth),
            ])
        } else {
            sample(&field.kind(), &field, variant, depth)
        };
        message.set_field(&field, value);
    }
    message
}

fn check<T>(desc: &MessageDescriptor) -> Result<usize>
where
    T: Message + Default + PartialEq + Serialize + DeserializeOwned,
{
    let variants = desc.oneofs().map(|o| o.fields().len()).max().unwrap_or(1);
    for variant in 0..variants {
        let expected = populated(desc, variant, 3);
        let name = desc.full_name();

        // Binary: dynamic -> generated -> dynamic loses nothing.
        let typed = T::decode(expected.encode_to_vec().as_slice())
            .with_context(|| format!("decode {name}"))?;
        let back = DynamicMessage::decode(desc.clone(), typed.encode_to_vec().as_slice())?;
        ensure!(
            back == expected,
            "{name} (variant {variant}) changed in a binary round trip"
        );

        // JSON: pbjson's output is the canonical protobuf JSON, and parses back.
        let ours = serde_json::to_value(&typed)?;
        let canonical = serde_json::to_value(&expected)?;
        ensure!(
            ours == canonical,
            "{name} JSON differs:\n ours {ours}\n spec {canonical}"
        );
        let parsed: T = serde_json::from_value(canonical)?;
        ensure!(
            parsed == typed,
            "{name} (variant {variant}) changed in a JSON round trip"
        );

        // The empty message round-trips too.
        let empty = T::default();
        ensure!(T::decode(empty.encode_to_vec().as_slice())? == empty);
        ensure!(serde_json::from_value::<T>(serde_json::to_value(&empty)?)? == empty);
    }
    Ok(variants)
}

#[test]
fn every_message_round_trips_with_every_field_set() -> Result<()> {
    let pool = pool();
    let mut checked = Vec::new();
    macro_rules! check_one {
        ($ty:ty, $name:literal) => {
            let desc = pool
                .get_message_by_name($name)
                .with_context(|| format!("{} is not in the descriptor set", $name))?;
            check::<$ty>(&desc)?;
            checked.push($name);
        };
    }
    ctrl_proto::for_each_message!(check_one);

    // The registry covers the whole package (nothing silently skipped).
    let in_package: Vec<_> = pool
        .all_messages()
        .filter(|m| m.package_name() == "ctrl.v1" && !m.is_map_entry())
        .map(|m| m.full_name().to_owned())
        .collect();
    assert_eq!(checked.len(), in_package.len(), "checked {checked:?}");
    assert!(checked.len() > 100, "only {} messages", checked.len());
    Ok(())
}

#[test]
fn sixty_four_bit_integers_are_json_strings_and_enums_are_names() -> Result<()> {
    // What Connect's JSON clients (browsers) depend on.
    let event = ctrl_proto::ctrl::v1::WatchResponse {
        version: u64::MAX,
        event: None,
    };
    let json = serde_json::to_value(&event)?;
    assert_eq!(json["version"], serde_json::json!("18446744073709551615"));
    let status = ctrl_proto::ctrl::v1::CreateDeploymentResponse {
        deployment_id: "d_1".into(),
        status: ctrl_proto::ctrl::v1::DeploymentStatus::Ready as i32,
        deduplicated: false,
    };
    let json = serde_json::to_value(&status)?;
    assert_eq!(json["deploymentId"], "d_1");
    assert_eq!(json["status"], "DEPLOYMENT_STATUS_READY");
    Ok(())
}
