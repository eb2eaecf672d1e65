-- PostgreSQL has no Python models: memberflow replays the identity graph between the two build phases
-- (memberflow.postgres.replay_identity, the same code as the DuckDB model) into the raw schema.
select
    id_type,
    id_value,
    member_id,
    first_seen_on,
    record,
    retired_member_id,
    merged_into_member_id,
    merged_on,
    split_from_member_id,
    split_on
from {{ raw_relation('identity_replay') }}
