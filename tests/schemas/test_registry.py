"""Our schema registry against the field's (emannotationschemas 5.26 ``type_mapping``): every
type, with its fields, their kinds, which are required, bound/unbound points and references.

The expected list is written out here by hand from the field's schema classes, independent of
:mod:`matengine.schemas.registry`. Codes: B bound point, P plain point, D derived bound point
(adds ``<pt>_dependent_chunk`` i and ``<pt>_level`` i?), R reference (``target_id``), s string,
f float, i integer, b bool, u the server-written user id; ``?`` optional.
"""

from __future__ import annotations

import pytest

from matengine.schemas import SCHEMAS, Kind

SYN = "pre_pt:B ctr_pt:P post_pt:B size:f?"
BCM = "target_id:R session:i scan_idx:i unit_id:i pref_ori:f pref_dir:f gOSI:f gDSI:f cc_abs:f"
FIELD_REGISTRY = {
    "synapse": SYN,
    "nocleft_synapse": "pre_pt:B post_pt:B score:f?",
    "nocenter_synapse": "pre_pt:B post_pt:B size:f?",
    "fly_synapse": "pre_pt:B post_pt:B connection_score:f? cleft_score:f?",
    "fly_nt_synapse": "pre_pt:B post_pt:B connection_score:f? cleft_score:f? gaba:f? ach:f? glut:f? "
    "oct:f? ser:f? da:f? valid_nt:b?",
    "bouton_shape": "target_id:R shape:s",
    "presynaptic_bouton_type": "target_id:R bouton_type:s",
    "postsynaptic_compartment": "target_id:R compartment:s on_spine:b? dendrite_class:s?",
    "spine_with_info": "pt:B volume:f? n_inputs:i?",
    "microns_func_coreg": "pt:B func_id:i",
    "microns_func_unit_coreg": "pt:B session:i scan_idx:i unit_id:i",
    "v1dd_func_unit_coreg": "pt:B column:i volume:i plane:i? roi:i residual:f? score:f?",
    "func_unit_ext_coreg": "target_id:R session:i scan_idx:i unit_id:i field:i? residual:f? score:f?",
    "func_properties_bcm": BCM,
    "simple_reference": "target_id:R",
    "reference_tag": "target_id:R tag:s",
    "cell_type_local": "pt:B cell_type:s classification_system:s",
    "cell_type_reference": "target_id:R classification_system:s cell_type:s",
    "cell_type_reference_user": "target_id:R classification_system:s cell_type:s user_id:u",
    "nucleus_detection": "pt:B volume:f? bb_start:P? bb_end:P?",
    "bound_tag": "pt:B tag:s",
    "bound_double_tag": "pt:B tag:s tag2:s",
    "bound_2tag": "pt:B tag:s pt2:B tag2:s",
    "bound_tag_user": "pt:B tag:s user_id:u",
    "bound_double_tag_user": "pt:B tag:s tag2:s user_id:u?",
    "bound_2tag_user": "pt:B tag:s pt2:B tag2:s user_id:u",
    "extended_classical_cell_type": "pt:B cell_type:s",
    "plastic_synapse": SYN + " plasticity:i",
    "glia_contact": "glia_pt:B object_pt:B size:f?",
    "contact": "size:i? sidea_pt:B sideb_pt:B ctr_pt:P?",
    "derived_spatial_point": "pt:D",
    "derived_tag": "pt:D tag:s",
    "derived_numeric_value": "pt:D value:f?",
    "proofread_status": "pt:B valid_id:i status:s",
    "compartment_proofread_status": "pt:B valid_id:i status_dendrite:s status_axon:s",
    "proofreading_boolstatus_user": "pt:B valid_id:i proofread:b user_id:u",
    "fly_neuropil": "target_id:R neuropil:s",
    "reference_point": "target_id:R pt:B",
    "representative_point": "pt:B",
    "reference_synapse_valid": "target_id:R is_valid:b",
    "reference_simple_group": "target_id:R group_id:i",
    "reference_simple_group_indexed": "target_id:R group_id:i",
    "fly_cell_type": "pt:B cell_type:s hemisphere:s",
    "fly_cell_type_ext": "pt:B cell_type:s hemisphere:s driver_line:s? synonym:s?",
    "braincircuits_annotation_user": "pt:B tag:s user_id:u",
    "bound_tag_bool": "pt:B tag:b",
    "bound_tag_bool_valid": "pt:B tag:b valid_id:i",
    "bound_tag_valid": "pt:B tag:s valid_id:i",
    "pt_bool_valid": "pt:P tag:b valid_id:i",
    "reference_integer": "target_id:R value:i",
    "reference_tag_float": "target_id:R tag:s value:f",
    "compartment_proofread_status_strategy": "pt:B valid_id:i status_dendrite:b status_axon:b "
    "strategy_dendrite:s strategy_axon:s",
    "reference_tag_with_confidence": "target_id:R confidence:f",
    "digital_twin_properties": BCM + " cc_max:f cc_norm:f OSI:f DSI:f readout_loc_x:f readout_loc_y:f",
    "cell_match": "pt:B query_root_id:i match_id:s score:f validation:b?",
    "cell_similarity": "pt:B match_pt:B query_root_id:i match_root_id:i score:f",
    "cell_match_reference": "target_id:R query_root_id:i match_id:s score:f validation:b?",
}

_CODES = {
    Kind.BOUND_POINT: "B",
    Kind.POINT: "P",
    Kind.REFERENCE: "R",
    Kind.STRING: "s",
    Kind.FLOAT: "f",
    Kind.INT: "i",
    Kind.BOOL: "b",
}


def _ours(name: str) -> str:
    out = []
    schema = SCHEMAS[name]
    for f in schema.fields:
        if f.parent is not None:
            continue  # described by the D code of its point
        code = _CODES[f.kind]
        if f.auto_user:
            code = "u"
        if f.point_class == "DerivedSpatialPoint":
            code = "D"
        out.append(f"{f.name}:{code}{'' if f.required else '?'}")
    return " ".join(out)


def test_registry_has_every_type_of_the_field_and_no_other():
    assert len(FIELD_REGISTRY) == 57
    assert sorted(SCHEMAS) == sorted(FIELD_REGISTRY)


@pytest.mark.parametrize("name", sorted(FIELD_REGISTRY))
def test_type_has_the_fields_of_the_field(name):
    assert _ours(name) == FIELD_REGISTRY[name]


def test_derived_points_carry_their_chunk_and_level():
    schema = SCHEMAS["derived_tag"]
    extras = {(f.name, f.key, f.required) for f in schema.point_extras("pt")}
    assert extras == {("pt_dependent_chunk", "dependent_chunk", True), ("pt_level", "level", False)}
    assert schema.bound_points == ["pt"]


def test_bound_and_reference_shapes():
    assert SCHEMAS["cell_similarity"].bound_points == ["pt", "match_pt"]
    assert SCHEMAS["pt_bool_valid"].bound_points == []
    assert [f.name for f in SCHEMAS["pt_bool_valid"].points] == ["pt"]
    refs = sorted(n for n, s in SCHEMAS.items() if s.is_reference)
    assert refs == sorted(n for n, spec in FIELD_REGISTRY.items() if "target_id:R" in spec)
    assert SCHEMAS["reference_point"].bound_points == ["pt"]


def test_choices_are_the_fields_validators():
    assert SCHEMAS["proofread_status"].field("status").choices == ("non", "clean", "extended")
    assert SCHEMAS["plastic_synapse"].field("plasticity").choices == (0, 1, 2, 3, 4)
    assert SCHEMAS["fly_cell_type"].field("hemisphere").choices == ("L", "R", "M", "U")


def test_derived_spatial_point_is_one_derived_point_posted_at_the_top_level():
    schema = SCHEMAS["derived_spatial_point"]
    assert schema.is_point_class and schema.bound_points == ["pt"]
    assert [c.name for c in schema.annotation_columns()] == [
        "pt_position_x",
        "pt_position_y",
        "pt_position_z",
        "pt_dependent_chunk",
        "pt_level",
    ]
    assert schema.top_level_names() == {
        "position": "pt_position",
        "supervoxel_id": "pt_supervoxel_id",
        "root_id": "pt_root_id",
        "dependent_chunk": "pt_dependent_chunk",
        "level": "pt_level",
    }
    assert not [n for n, s in SCHEMAS.items() if s.top_level_names() and n != "derived_spatial_point"]
