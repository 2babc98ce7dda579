"""Shared by the peer scripts that point the real SDK at a nicompute devnet or chopsticks.

`patch_state_call_0x()`: chopsticks accepts `state_call` data only `0x`-prefixed, and the SDK
9.0.0's legacy runtime call (behind get_neuron_for_pubkey_and_subnet) sends it bare; a node accepts
both, so the prefix is added on the way out and nothing else is touched.
"""


def patch_state_call_0x():
    from async_substrate_interface.sync_substrate import SubstrateInterface

    sent = SubstrateInterface.rpc_request

    def rpc_request(self, method, params, *args, **kwargs):
        if method == "state_call" and len(params) > 1 and isinstance(params[1], str) and not params[1].startswith("0x"):
            params = [params[0], "0x" + params[1], *params[2:]]
        return sent(self, method, params, *args, **kwargs)

    SubstrateInterface.rpc_request = rpc_request
