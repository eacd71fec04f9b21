"""MigraVI's ML2 mechanism driver for the development OpenStack.

No L2 agent runs in the development control plane: MigraVI's host runtime plugs each container
into what Neutron records, as an agent would. Without a driver that binds them, ports end
``binding_failed`` and Nova refuses them, so this driver binds every port on every segment.
"""
from neutron_lib.api.definitions import portbindings
from neutron_lib import constants
from neutron_lib.plugins.ml2 import api


class MigraviMechanismDriver(api.MechanismDriver):
    def initialize(self):
        pass

    def bind_port(self, context):
        for segment in context.segments_to_bind:
            context.set_binding(segment[api.ID], portbindings.VIF_TYPE_OTHER,
                                {portbindings.CAP_PORT_FILTER: True},
                                status=constants.PORT_STATUS_ACTIVE)
            return
