"""The depth node's parameters on an rclpy node: declaration from the one table
(:mod:`ppd_ros.parameters`), reading, and the checks of runtime changes."""
from __future__ import annotations

from ppd_ros.parameters import (DEPTH_KIND_NOTES, LIVE, PARAMETERS, RELATIVE_NOTE, REPORTED, RELOAD, SPECS,
                                DepthConfig, ParameterError, coerce_value, validate)

__all__ = ["PARAMETERS", "REPORTED", "change_problems", "declare_parameters", "declared_parameter_names",
           "parameter_values"]


def declared_parameter_names() -> tuple[str, ...]:
    """Names of every parameter the depth node declares."""
    return tuple(spec.name for spec in PARAMETERS)


def declare_parameters(node) -> list[str]:
    """Declare every parameter on ``node`` (overrides from the command line or a params file
    apply). Returns one message per override of the wrong type (the default is kept for it)."""
    from rcl_interfaces.msg import ParameterDescriptor
    from rclpy.exceptions import InvalidParameterTypeException

    problems = []
    for spec in PARAMETERS:
        descriptor = ParameterDescriptor(
            description=spec.description,
            additional_constraints=spec.constraint_text,
            read_only=spec.change == "read-only",
            # floats also accept integer overrides (`-p sync_tolerance:=0`); converted when read
            dynamic_typing=isinstance(spec.default, float) or spec.type_name == "double[]",
        )
        value = spec.default
        if spec.name == "depth_kind":  # the report follows the (read-only) metric_source declared before it
            value = DEPTH_KIND_NOTES.get(node.get_parameter("metric_source").value, RELATIVE_NOTE)
        try:
            node.declare_parameter(spec.name, value, descriptor, ignore_override=spec.name in REPORTED)
        except InvalidParameterTypeException as error:
            problems.append(f"parameter {spec.name}: {error}")
            node.declare_parameter(spec.name, value, descriptor, ignore_override=True)
    return problems


def parameter_values(node) -> dict:
    """Current values of the declared parameters (as rclpy holds them; validate() coerces)."""
    return {spec.name: node.get_parameter(spec.name).value for spec in PARAMETERS}


def change_problems(current: dict, changes: dict, configured: bool) -> tuple[list[str], DepthConfig | None]:
    """Why ``changes`` (name -> new value) cannot be applied to a node with ``current`` values, or
    the configuration they give. While ``configured``, only parameters marked live may change."""
    unknown = [name for name in changes if name not in SPECS]
    if unknown:
        return [f"parameter {name} is not a parameter of this node" for name in unknown], None
    if configured:
        reload = [name for name in changes if SPECS[name].change == RELOAD and
                  coerce_value(SPECS[name], changes[name]) != coerce_value(SPECS[name], current[name])]
        if reload:
            live = ", ".join(spec.name for spec in PARAMETERS if spec.change == LIVE)
            return [f"parameter {name} cannot change while the node is configured: it needs a reload "
                    f"(deactivate, cleanup, set it, configure, activate; or restart the node). Live: {live}"
                    for name in reload], None
    values = dict(current, **changes)
    try:
        return [], validate(values)
    except ParameterError as error:
        return error.problems, None
