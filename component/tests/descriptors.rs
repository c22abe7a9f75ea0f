//! The compiled protos match daprd's components API field for field: package, services, RPCs
//! (unary, with their request and response types), messages, field names, numbers, types,
//! labels, enums and the oneof. The expected lists below are transcribed from the field tables
//! of daprd's `dapr/proto/components/v1` (the conformance run through real daprd checks the
//! wire too).

use std::collections::BTreeSet;

use prost::Message;
use prost_types::field_descriptor_proto::{Label, Type};
use prost_types::{DescriptorProto, FileDescriptorSet};

const PACKAGE: &str = "dapr.proto.components.v1";

/// `Service.Rpc(Request) -> Response`, all unary.
const RPCS: &[&str] = &[
    "StateStore.Init(InitRequest) -> InitResponse",
    "StateStore.Features(FeaturesRequest) -> FeaturesResponse",
    "StateStore.Delete(DeleteRequest) -> DeleteResponse",
    "StateStore.Get(GetRequest) -> GetResponse",
    "StateStore.Set(SetRequest) -> SetResponse",
    "StateStore.Ping(PingRequest) -> PingResponse",
    "StateStore.BulkDelete(BulkDeleteRequest) -> BulkDeleteResponse",
    "StateStore.BulkGet(BulkGetRequest) -> BulkGetResponse",
    "StateStore.BulkSet(BulkSetRequest) -> BulkSetResponse",
    "TransactionalStateStore.Transact(TransactionalStateRequest) -> TransactionalStateResponse",
    "QueriableStateStore.Query(QueryRequest) -> QueryResponse",
    "TransactionalStoreMultiMaxSize.MultiMaxSize(MultiMaxSizeRequest) -> MultiMaxSizeResponse",
];

/// `Message.field = number type`; `repeated` and `map<k,v>` spelled out; `oneof(name)` marks
/// oneof members. Empty messages are listed as `Message {}`.
const FIELDS: &[&str] = &[
    // common.proto
    "MetadataRequest.properties = 1 map<string,string>",
    "FeaturesRequest {}",
    "FeaturesResponse.features = 1 repeated string",
    "PingRequest {}",
    "PingResponse {}",
    // state.proto
    "Etag.value = 1 string",
    "StateOptions.concurrency = 1 StateOptions.StateConcurrency",
    "StateOptions.consistency = 2 StateOptions.StateConsistency",
    "InitRequest.metadata = 1 MetadataRequest",
    "InitResponse {}",
    "GetRequest.key = 1 string",
    "GetRequest.metadata = 2 map<string,string>",
    "GetRequest.consistency = 3 StateOptions.StateConsistency",
    "GetResponse.data = 1 bytes",
    "GetResponse.etag = 2 Etag",
    "GetResponse.metadata = 3 map<string,string>",
    "GetResponse.content_type = 4 string",
    "DeleteRequest.key = 1 string",
    "DeleteRequest.etag = 2 Etag",
    "DeleteRequest.metadata = 3 map<string,string>",
    "DeleteRequest.options = 4 StateOptions",
    "DeleteResponse {}",
    "SetRequest.key = 1 string",
    "SetRequest.value = 2 bytes",
    "SetRequest.etag = 3 Etag",
    "SetRequest.metadata = 4 map<string,string>",
    "SetRequest.options = 5 StateOptions",
    "SetRequest.content_type = 6 string",
    "SetResponse {}",
    "BulkDeleteRequestOptions.parallelism = 1 int64",
    "BulkDeleteRequest.items = 1 repeated DeleteRequest",
    "BulkDeleteRequest.options = 2 BulkDeleteRequestOptions",
    "BulkDeleteResponse {}",
    "BulkGetRequestOptions.parallelism = 1 int64",
    "BulkGetRequest.items = 1 repeated GetRequest",
    "BulkGetRequest.options = 2 BulkGetRequestOptions",
    "BulkStateItem.key = 1 string",
    "BulkStateItem.data = 2 bytes",
    "BulkStateItem.etag = 3 Etag",
    "BulkStateItem.error = 4 string",
    "BulkStateItem.metadata = 5 map<string,string>",
    "BulkStateItem.content_type = 6 string",
    "BulkGetResponse.items = 1 repeated BulkStateItem",
    "BulkSetRequestOptions.parallelism = 1 int64",
    "BulkSetRequest.items = 1 repeated SetRequest",
    "BulkSetRequest.options = 2 BulkSetRequestOptions",
    "BulkSetResponse {}",
    "TransactionalStateOperation.delete = 1 DeleteRequest oneof(request)",
    "TransactionalStateOperation.set = 2 SetRequest oneof(request)",
    "TransactionalStateRequest.operations = 1 repeated TransactionalStateOperation",
    "TransactionalStateRequest.metadata = 2 map<string,string>",
    "TransactionalStateResponse {}",
    "Sorting.key = 1 string",
    "Sorting.order = 2 Sorting.Order",
    "Pagination.limit = 1 int64",
    "Pagination.token = 2 string",
    "Query.filter = 1 map<string,google.protobuf.Any>",
    "Query.sort = 2 repeated Sorting",
    "Query.pagination = 3 Pagination",
    "QueryRequest.query = 1 Query",
    "QueryRequest.metadata = 2 map<string,string>",
    "QueryItem.key = 1 string",
    "QueryItem.data = 2 bytes",
    "QueryItem.etag = 3 Etag",
    "QueryItem.error = 4 string",
    "QueryItem.content_type = 5 string",
    "QueryResponse.items = 1 repeated QueryItem",
    "QueryResponse.token = 2 string",
    "QueryResponse.metadata = 3 map<string,string>",
    "MultiMaxSizeRequest {}",
    "MultiMaxSizeResponse.max_size = 1 int64",
];

const ENUMS: &[&str] = &[
    "Sorting.Order.ASC = 0",
    "Sorting.Order.DESC = 1",
    "StateOptions.StateConcurrency.CONCURRENCY_UNSPECIFIED = 0",
    "StateOptions.StateConcurrency.CONCURRENCY_FIRST_WRITE = 1",
    "StateOptions.StateConcurrency.CONCURRENCY_LAST_WRITE = 2",
    "StateOptions.StateConsistency.CONSISTENCY_UNSPECIFIED = 0",
    "StateOptions.StateConsistency.CONSISTENCY_EVENTUAL = 1",
    "StateOptions.StateConsistency.CONSISTENCY_STRONG = 2",
];

fn descriptors() -> FileDescriptorSet {
    FileDescriptorSet::decode(roost_component::proto::FILE_DESCRIPTOR_SET).unwrap()
}

fn short(type_name: &str) -> String {
    type_name
        .trim_start_matches('.')
        .trim_start_matches(&format!("{PACKAGE}."))
        .to_string()
}

fn type_text(field: &prost_types::FieldDescriptorProto) -> String {
    match field.r#type() {
        Type::String => "string".into(),
        Type::Bytes => "bytes".into(),
        Type::Int64 => "int64".into(),
        Type::Int32 => "int32".into(),
        Type::Bool => "bool".into(),
        Type::Message | Type::Enum => short(field.type_name()),
        other => format!("{other:?}"),
    }
}

fn collect(
    prefix: &str,
    message: &DescriptorProto,
    fields: &mut BTreeSet<String>,
    enums: &mut BTreeSet<String>,
) {
    let name = format!("{prefix}{}", message.name());
    if message.options.as_ref().is_some_and(|o| o.map_entry()) {
        return;
    }
    if message.field.is_empty() {
        fields.insert(format!("{name} {{}}"));
    }
    for field in &message.field {
        let map_entry = (field.r#type() == Type::Message)
            .then(|| {
                message
                    .nested_type
                    .iter()
                    .find(|n| short(field.type_name()) == format!("{name}.{}", n.name()))
                    .filter(|n| n.options.as_ref().is_some_and(|o| o.map_entry()))
            })
            .flatten();
        let ty = match map_entry {
            Some(entry) => format!(
                "map<{},{}>",
                type_text(&entry.field[0]),
                type_text(&entry.field[1])
            ),
            None if field.label() == Label::Repeated => format!("repeated {}", type_text(field)),
            None => type_text(field),
        };
        assert!(!field.proto3_optional(), "no `optional` fields in the spec");
        let oneof = field
            .oneof_index
            .map(|i| format!(" oneof({})", message.oneof_decl[i as usize].name()))
            .unwrap_or_default();
        fields.insert(format!(
            "{name}.{} = {} {ty}{oneof}",
            field.name(),
            field.number()
        ));
    }
    for nested in &message.nested_type {
        collect(&format!("{name}."), nested, fields, enums);
    }
    for e in &message.enum_type {
        for value in &e.value {
            enums.insert(format!(
                "{name}.{}.{} = {}",
                e.name(),
                value.name(),
                value.number()
            ));
        }
    }
}

#[test]
fn files_package_and_imports_match_the_spec() {
    let set = descriptors();
    let ours: Vec<_> = set.file.iter().filter(|f| f.package() == PACKAGE).collect();
    let names: BTreeSet<&str> = ours.iter().map(|f| f.name()).collect();
    assert_eq!(
        names,
        BTreeSet::from([
            "dapr/proto/components/v1/common.proto",
            "dapr/proto/components/v1/state.proto"
        ])
    );
    for file in ours {
        assert_eq!(file.syntax(), "proto3");
        let imports: BTreeSet<&str> = file.dependency.iter().map(String::as_str).collect();
        if file.name().ends_with("state.proto") {
            assert_eq!(
                imports,
                BTreeSet::from([
                    "google/protobuf/any.proto",
                    "dapr/proto/components/v1/common.proto"
                ])
            );
        } else {
            assert!(imports.is_empty());
        }
    }
}

#[test]
fn services_and_rpcs_match_the_spec() {
    let mut rpcs = BTreeSet::new();
    for file in descriptors().file.iter().filter(|f| f.package() == PACKAGE) {
        for service in &file.service {
            for method in &service.method {
                assert!(
                    !method.client_streaming() && !method.server_streaming(),
                    "unary only"
                );
                rpcs.insert(format!(
                    "{}.{}({}) -> {}",
                    service.name(),
                    method.name(),
                    short(method.input_type()),
                    short(method.output_type())
                ));
            }
        }
    }
    let expected: BTreeSet<String> = RPCS.iter().map(|s| s.to_string()).collect();
    assert_eq!(rpcs, expected);
}

#[test]
fn messages_fields_and_enums_match_the_spec() {
    let mut fields = BTreeSet::new();
    let mut enums = BTreeSet::new();
    for file in descriptors().file.iter().filter(|f| f.package() == PACKAGE) {
        for message in &file.message_type {
            collect("", message, &mut fields, &mut enums);
        }
        assert!(file.enum_type.is_empty(), "enums are nested in the spec");
    }
    let expected: BTreeSet<String> = FIELDS.iter().map(|s| s.to_string()).collect();
    let missing: Vec<_> = expected.difference(&fields).collect();
    let extra: Vec<_> = fields.difference(&expected).collect();
    assert!(
        missing.is_empty() && extra.is_empty(),
        "missing {missing:#?}\nextra {extra:#?}"
    );
    let expected_enums: BTreeSet<String> = ENUMS.iter().map(|s| s.to_string()).collect();
    assert_eq!(enums, expected_enums);
}
