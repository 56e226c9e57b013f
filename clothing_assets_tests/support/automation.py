"""Driving the location's automation in a test: the stage observer's ticks, stored as the
daemon stores them, and the automation sensor's conditions evaluated with
`dg.evaluate_automation_conditions`, as the sensor evaluates them."""

from __future__ import annotations

from datetime import datetime

import dagster as dg


class Automation:
    """The location's stage observer and automation conditions on one test instance, over
    `resources` (default: the environment's)."""

    def __init__(self, instance: dg.DagsterInstance, resources: dict | None = None):
        from clothing_assets.definitions import defs
        from clothing_assets.defs.sensors import OBSERVER

        self.instance = instance
        self.resources = resources
        self.defs = defs()
        self.observer = self.defs.resolve_sensor_def(OBSERVER)
        self.cursor = None

    def _resources(self) -> dict:
        from clothing_assets.environment import resources_for

        return resources_for() if self.resources is None else self.resources

    def observe(self) -> dg.SensorResult | dg.SkipReason:
        """One observer tick; the observations it returns are stored in the instance."""
        resources = self._resources()
        with dg.build_sensor_context(
            instance=self.instance,
            resources={k: resources[k] for k in self.observer.required_resource_keys},
        ) as context:
            result = self.observer(context)
        if isinstance(result, dg.SensorResult):
            for event in result.asset_events:
                self.instance.report_runless_asset_event(event)
        return result

    def evaluate(self, when: datetime | None = None) -> set[str]:
        """One evaluation of every condition (at `when`, default now): the assets it requests."""
        result = dg.evaluate_automation_conditions(
            defs=self.defs, instance=self.instance, cursor=self.cursor, evaluation_time=when
        )
        self.cursor = result.cursor
        keys = self.defs.resolve_asset_graph().get_all_asset_keys()
        return {k.to_user_string() for k in keys if result.get_num_requested(k)}

    def run(self, selection: set[str], **kwargs) -> dg.ExecuteInProcessResult:
        """A run of `selection` (with the checks) in the instance, as the sensor would launch."""
        from clothing_assets.definitions import all_assets, all_checks

        return dg.materialize(
            [*all_assets(), *all_checks()], resources=self._resources(),
            selection=sorted(selection), instance=self.instance, raise_on_error=False, **kwargs,
        )  # fmt: skip
