"""Every annotation schema type of the field's registry (``emannotationschemas`` 5.26,
``type_mapping``), by the same names, fields, kinds, bound/unbound points and reference
targets, written as our own definitions (the package pins SQLAlchemy < 2 and marshmallow 3.5).

Conventions of the field kept here: a field without ``required=True`` is optional (nullable);
``NumericField``/``SegmentationField``/``AutoUserIdField`` are integers; a ``OneOf`` validator
is ``choices``; every reference schema points at its table's ``reference_table`` through
``target_id``. ``valid`` (on every field schema) is one of our CRUD columns, not a schema field.
"""

from __future__ import annotations

from matengine.schemas.model import (
    BOUND_SPATIAL_POINT,
    DERIVED_SPATIAL_POINT,
    SPATIAL_POINT,
    AnnotationSchema,
    Field,
    Kind,
)


def _bound(name: str, description: str = "") -> Field:
    return Field(name, Kind.BOUND_POINT, index=True, description=description, point_class=BOUND_SPATIAL_POINT)


def _point(name: str, description: str = "", *, required: bool = True) -> Field:
    return Field(name, Kind.POINT, required=required, description=description, point_class=SPATIAL_POINT)


def _derived(name: str) -> tuple[Field, ...]:
    """A bound point that also records the chunk (and level) it was made in."""
    return (
        Field(name, Kind.BOUND_POINT, index=True, point_class=DERIVED_SPATIAL_POINT),
        Field(
            f"{name}_dependent_chunk",
            Kind.INT,
            description="Chunk id for the point at the time the annotation was made",
            parent=name,
            key="dependent_chunk",
        ),
        Field(f"{name}_level", Kind.INT, required=False, description="Chunk level", parent=name, key="level"),
    )


def _target() -> Field:
    return Field("target_id", Kind.REFERENCE, index=True, description="annotation this references")


def _s(name: str, required: bool = True, description: str = "", **kw: object) -> Field:
    return Field(name, Kind.STRING, required=required, description=description, **kw)  # type: ignore[arg-type]


def _f(name: str, required: bool = True, description: str = "") -> Field:
    return Field(name, Kind.FLOAT, required=required, description=description)


def _i(name: str, required: bool = True, description: str = "", **kw: object) -> Field:
    return Field(name, Kind.INT, required=required, description=description, **kw)  # type: ignore[arg-type]


def _b(name: str, required: bool = True, description: str = "") -> Field:
    return Field(name, Kind.BOOL, required=required, description=description)


def _user(required: bool = True) -> Field:
    return Field(
        "user_id",
        Kind.INT,
        required=required,
        description="User who created the row, written by the server from the caller's token",
        auto_user=True,
    )


def _valid_id(description: str = "Root id of the object when the value was assessed") -> Field:
    return _i("valid_id", description=description)


_PRE = _bound("pre_pt", "a nearby point located in the presynaptic compartment of the synapse")
_POST = _bound("post_pt", "a nearby point located in the postsynaptic compartment of the synapse")
_CTR = _point("ctr_pt", "central point")
_PT = _bound("pt", "Location associated with the annotation")
_TAG = _s("tag", description="Arbitrary text tag")
_PROOFREAD = ("non", "clean", "extended")
_BOUTONS = ("pancake", "basmati", "potato", "sst", "vertical", "vip", "ivy", "clutch", "chandelier")
_NT = ("gaba", "ach", "glut", "oct", "ser", "da")
_SCAN = (_i("session"), _i("scan_idx"), _i("unit_id"))
_BCM = (*_SCAN, _f("pref_ori"), _f("pref_dir"), _f("gOSI"), _f("gDSI"), _f("cc_abs"))


def _schema(name: str, class_name: str, description: str, *fields: Field) -> AnnotationSchema:
    return AnnotationSchema(name, tuple(fields), description, class_name, class_name in _POINT_CLASSES)


_POINT_CLASSES = {DERIVED_SPATIAL_POINT}


_SYNAPSE = (_PRE, _CTR, _POST, _f("size", False, "size of synapse"))

ALL = [
    _schema("synapse", "SynapseSchema", "a synapse: pre/post points, a center point, size", *_SYNAPSE),
    _schema(
        "nocleft_synapse",
        "NoCleftSynapse",
        "a synapse without a cleft point, with a score",
        _PRE,
        _POST,
        _f("score", False),
    ),
    _schema(
        "nocenter_synapse",
        "NoCenterSynapse",
        "a synapse without a center point",
        _PRE,
        _POST,
        _f("size", False),
    ),
    _schema(
        "fly_synapse",
        "BuhmannSynapseSchema",
        "a synapse scored by Buhmann et al. 2019",
        _PRE,
        _POST,
        _f("connection_score", False),
        _f("cleft_score", False),
    ),
    _schema(
        "fly_nt_synapse",
        "BuhmannEcksteinSynapseSchema",
        "a Buhmann synapse with neurotransmitter probabilities (Eckstein et al. 2020)",
        _PRE,
        _POST,
        _f("connection_score", False),
        _f("cleft_score", False),
        *(_f(n, False) for n in _NT),
        _b("valid_nt", False),
    ),
    _schema(
        "bouton_shape",
        "BoutonShape",
        "the shape of a bouton",
        _target(),
        _s("shape", choices=("pancake", "basmati", "potato")),
    ),
    _schema(
        "presynaptic_bouton_type",
        "PresynapticBoutonType",
        "presynaptic type based on bouton",
        _target(),
        _s("bouton_type", choices=_BOUTONS),
    ),
    _schema(
        "postsynaptic_compartment",
        "PostsynapticCompartment",
        "compartment targeted by a synapse",
        _target(),
        _s("compartment", choices=("soma", "dendrite", "axon")),
        _b("on_spine", False),
        _s("dendrite_class", False, choices=("basal", "apical")),
    ),
    _schema(
        "spine_with_info",
        "SpineWithInfo",
        "a spine with its volume and input count",
        _PT,
        _f("volume", False),
        _i("n_inputs", False),
    ),
    _schema(
        "microns_func_coreg",
        "FunctionalCoregistration",
        "a functional cell at a cell body",
        _PT,
        _i("func_id"),
    ),
    _schema(
        "microns_func_unit_coreg",
        "FunctionalUnitCoregistration",
        "a functional unit at a cell body",
        _PT,
        *_SCAN,
    ),
    _schema(
        "v1dd_func_unit_coreg",
        "V1DDFunctionalUnitCoregistration",
        "a V1DD functional unit",
        _PT,
        _i("column"),
        _i("volume"),
        _i("plane", False),
        _i("roi"),
        _f("residual", False),
        _f("score", False),
    ),
    _schema(
        "func_unit_ext_coreg",
        "FunctionalUnitCoregistrationExtended",
        "a functional unit matched to another annotation",
        _target(),
        *_SCAN,
        _i("field", False),
        _f("residual", False),
        _f("score", False),
    ),
    _schema(
        "func_properties_bcm", "FunctionalPropertiesBCM", "functional properties of a unit", _target(), *_BCM
    ),
    _schema("simple_reference", "ReferenceAnnotation", "a reference to another annotation", _target()),
    _schema("reference_tag", "ReferenceTagAnnotation", "a tag on a row of another table", _target(), _TAG),
    _schema(
        "cell_type_local",
        "CellTypeLocal",
        "a cell type label at a point",
        _PT,
        _s("cell_type"),
        _s("classification_system"),
    ),
    _schema(
        "cell_type_reference",
        "CellTypeReference",
        "a cell type label on another annotation",
        _target(),
        _s("classification_system"),
        _s("cell_type"),
    ),
    _schema(
        "cell_type_reference_user",
        "CellTypeReferenceUser",
        "a cell type label with its author",
        _target(),
        _s("classification_system"),
        _s("cell_type"),
        _user(),
    ),
    _schema(
        "nucleus_detection",
        "NucleusDetection",
        "a detected nucleus: center, volume, bounding box",
        _PT,
        _f("volume", False),
        _point("bb_start", required=False),
        _point("bb_end", required=False),
    ),
    _schema("bound_tag", "BoundTagAnnotation", "a tag at a point", _PT, _TAG),
    _schema("bound_double_tag", "BoundDoubleTagAnnotation", "two tags at a point", _PT, _TAG, _s("tag2")),
    _schema(
        "bound_2tag", "Bound2TagAnnotation", "two tags at two points", _PT, _TAG, _bound("pt2"), _s("tag2")
    ),
    _schema(
        "bound_tag_user", "BoundTagAnnotationUser", "a tag at a point with its author", _PT, _TAG, _user()
    ),
    _schema(
        "bound_double_tag_user",
        "BoundDoubleTagAnnotationUser",
        "two tags at a point with author",
        _PT,
        _TAG,
        _s("tag2"),
        _user(required=False),
    ),
    _schema(
        "bound_2tag_user",
        "Bound2TagAnnotationUser",
        "two tags at two points with author",
        _PT,
        _TAG,
        _bound("pt2"),
        _s("tag2"),
        _user(),
    ),
    _schema(
        "extended_classical_cell_type",
        "ExtendedClassicalCellType",
        "a classical cell type at a point",
        _PT,
        _s("cell_type"),
    ),
    _schema(
        "plastic_synapse",
        "PlasticSynapse",
        "a synapse with a plasticity state",
        *_SYNAPSE,
        _i("plasticity", choices=(0, 1, 2, 3, 4)),
    ),
    _schema(
        "glia_contact",
        "GliaContact",
        "a glia-object contact",
        _bound("glia_pt"),
        _bound("object_pt"),
        _f("size", False),
    ),
    _schema(
        "contact",
        "Contact",
        "a contact between two objects",
        _i("size", False),
        _bound("sidea_pt"),
        _bound("sideb_pt"),
        _point("ctr_pt", required=False),
    ),
    _schema(
        "derived_spatial_point",
        "DerivedSpatialPoint",
        "a point with the chunk it was made in",
        *_derived("pt"),
    ),
    _schema("derived_tag", "DerivedTag", "a tag at a derived point", *_derived("pt"), _TAG),
    _schema(
        "derived_numeric_value",
        "DerivedNumeric",
        "a number at a derived point",
        *_derived("pt"),
        _f("value", False),
    ),
    _schema(
        "proofread_status",
        "ProofreadStatus",
        "the proofread status of a cell",
        _PT,
        _valid_id(),
        _s("status", choices=_PROOFREAD),
    ),
    _schema(
        "compartment_proofread_status",
        "CompartmentProofreadStatus",
        "the proofread status of dendrite and axon",
        _PT,
        _valid_id(),
        _s("status_dendrite", choices=_PROOFREAD),
        _s("status_axon", choices=_PROOFREAD),
    ),
    _schema(
        "proofreading_boolstatus_user",
        "ProofreadingBoolStatusUser",
        "a proofread flag with its assessor",
        _PT,
        _valid_id(),
        _b("proofread"),
        _user(),
    ),
    _schema(
        "fly_neuropil", "FlyNeuropil", "a neuropil name on another annotation", _target(), _s("neuropil")
    ),
    _schema(
        "reference_point",
        "FlatSegmentationReferenceSinglePoint",
        "a bound point attached to a row of another table",
        _target(),
        _PT,
    ),
    _schema("representative_point", "RepresentativePoint", "a point standing for an object", _PT),
    _schema(
        "reference_synapse_valid", "ValidSynapse", "a validity flag on a synapse", _target(), _b("is_valid")
    ),
    _schema(
        "reference_simple_group", "SimpleGroup", "a group id on another annotation", _target(), _i("group_id")
    ),
    _schema(
        "reference_simple_group_indexed",
        "SimpleGroupIndexed",
        "an indexed group id",
        _target(),
        _i("group_id", index=True),
    ),
    _schema(
        "fly_cell_type",
        "FlyCellType",
        "a fly cell type and hemisphere",
        _PT,
        _s("cell_type"),
        _s("hemisphere", choices=("L", "R", "M", "U")),
    ),
    _schema(
        "fly_cell_type_ext",
        "FlyCellTypeExt",
        "a fly cell type with driver line and synonym",
        _PT,
        _s("cell_type"),
        _s("hemisphere", choices=("L", "R", "M", "U")),
        _s("driver_line", False),
        _s("synonym", False),
    ),
    _schema(
        "braincircuits_annotation_user",
        "BrainCircuitsBoundTagAnnotationUser",
        "a BrainCircuits tag with its author",
        _PT,
        _TAG,
        _user(),
    ),
    _schema("bound_tag_bool", "BoundBoolAnnotation", "a boolean at a point", _PT, _b("tag")),
    _schema(
        "bound_tag_bool_valid",
        "BoundBoolWithValid",
        "a boolean at a point with its root",
        _PT,
        _b("tag"),
        _valid_id(),
    ),
    _schema("bound_tag_valid", "BoundTagWithValid", "a tag at a point with its root", _PT, _TAG, _valid_id()),
    _schema(
        "pt_bool_valid",
        "SpatialPointBoolWithValid",
        "a boolean at an unbound point with a root",
        _point("pt"),
        _b("tag"),
        _valid_id(),
    ),
    _schema(
        "reference_integer", "ReferenceInteger", "an integer on another annotation", _target(), _i("value")
    ),
    _schema(
        "reference_tag_float",
        "ReferenceTagFloat",
        "a tag and a number on another annotation",
        _target(),
        _TAG,
        _f("value"),
    ),
    _schema(
        "compartment_proofread_status_strategy",
        "CompartmentProofreadStatusStrategy",
        "dendrite/axon proofread flags with strategies",
        _PT,
        _valid_id(),
        _b("status_dendrite"),
        _b("status_axon"),
        _s("strategy_dendrite"),
        _s("strategy_axon"),
    ),
    _schema(
        "reference_tag_with_confidence",
        "ReferenceTagWithConfidence",
        "a confidence on another annotation",
        _target(),
        _f("confidence"),
    ),
    _schema(
        "digital_twin_properties",
        "DigitalTwinPropertiesBCM",
        "digital twin properties of a unit",
        _target(),
        *_BCM,
        _f("cc_max"),
        _f("cc_norm"),
        _f("OSI"),
        _f("DSI"),
        _f("readout_loc_x"),
        _f("readout_loc_y"),
    ),
    _schema(
        "cell_match",
        "CellMatch",
        "a cell matched to a cell of another dataset",
        _PT,
        _i("query_root_id"),
        _s("match_id", index=True),
        _f("score"),
        _b("validation", False),
    ),
    _schema(
        "cell_similarity",
        "CellSimilarity",
        "a similarity score between two cells",
        _PT,
        _bound("match_pt"),
        _i("query_root_id"),
        _i("match_root_id"),
        _f("score"),
    ),
    _schema(
        "cell_match_reference",
        "CellMatchReference",
        "a cell match on another annotation",
        _target(),
        _i("query_root_id"),
        _s("match_id", index=True),
        _f("score"),
        _b("validation", False),
    ),
]
