"""The SDL gamepad reader against SDL's own virtual joystick: a real device to the GameController
API, no display, no /dev/input."""

import ctypes
import os

import pytest
import sdl2

from pld_robot.teleop.sdl_gamepad import (
    N_AXES,
    N_BUTTONS,
    GamepadDisconnected,
    GamepadError,
    SdlGamepad,
)

SUBSYSTEMS = sdl2.SDL_INIT_GAMECONTROLLER | sdl2.SDL_INIT_JOYSTICK
CONTROLLER_BUTTONS = (
    "a b x y back guide start leftstick rightstick leftshoulder rightshoulder "
    "dpup dpdown dpleft dpright misc1 paddle1 paddle2 paddle3 paddle4"
).split()
CONTROLLER_AXES = "leftx lefty rightx righty lefttrigger righttrigger".split()


class VirtualPad:
    """A virtual game controller; `raw_*` address its raw joystick inputs."""

    def __init__(self, name: bytes):
        desc = sdl2.SDL_VirtualJoystickDesc()
        desc.version = sdl2.SDL_VIRTUAL_JOYSTICK_DESC_VERSION
        desc.type = sdl2.SDL_JOYSTICK_TYPE_GAMECONTROLLER
        desc.naxes = N_AXES
        desc.nbuttons = N_BUTTONS
        desc.name = name
        self.index = sdl2.SDL_JoystickAttachVirtualEx(ctypes.byref(desc))
        assert self.index >= 0, sdl2.SDL_GetError()
        self.joystick = sdl2.SDL_JoystickOpen(self.index)
        self.instance = sdl2.SDL_JoystickInstanceID(self.joystick)

    def guid(self) -> str:
        text = ctypes.create_string_buffer(33)
        sdl2.SDL_JoystickGetGUIDString(sdl2.SDL_JoystickGetGUID(self.joystick), text, 33)
        return text.value.decode()

    def raw_axis(self, axis: int, value: int) -> None:
        assert sdl2.SDL_JoystickSetVirtualAxis(self.joystick, axis, value) == 0

    def raw_button(self, button: int, down: bool) -> None:
        assert sdl2.SDL_JoystickSetVirtualButton(self.joystick, button, int(down)) == 0

    def unplug(self) -> None:
        if self.joystick:
            sdl2.SDL_JoystickClose(self.joystick)
            self.joystick = None
            assert sdl2.SDL_JoystickDetachVirtual(self._current_index()) == 0

    def _current_index(self) -> int:
        # Device indices shift when other devices go away; the instance id does not.
        for index in range(sdl2.SDL_NumJoysticks()):
            if sdl2.SDL_JoystickGetDeviceInstanceID(index) == self.instance:
                return index
        raise AssertionError("virtual pad vanished")


@pytest.fixture
def sdl():
    assert sdl2.SDL_InitSubSystem(SUBSYSTEMS) == 0, sdl2.SDL_GetError()
    pads = []

    def attach(name: bytes = b"PLD Test Pad") -> VirtualPad:
        pads.append(VirtualPad(name))
        return pads[-1]

    yield attach
    for pad in pads:
        pad.unplug()
    sdl2.SDL_QuitSubSystem(SUBSYSTEMS)


def test_runs_headless():
    # The claim in ARCHITECTURE.md: no display and no input devices are needed.
    assert not os.environ.get("DISPLAY") and not os.environ.get("WAYLAND_DISPLAY")
    assert not os.path.exists("/dev/input/js0")


def test_axes_are_scaled_and_signed_like_game_controller_node(sdl):
    pad = sdl()
    with SdlGamepad(pad.index) as gamepad:
        pad.raw_axis(0, -32768)  # left stick fully left
        pad.raw_axis(1, -16384)  # left stick half up
        pad.raw_axis(2, 32767)  # right stick fully right
        pad.raw_axis(3, 0)
        pad.raw_axis(4, -32768)  # left trigger released
        pad.raw_axis(5, 32767)  # right trigger fully pressed
        axes, buttons = gamepad.read()
        assert len(axes) == 6 and len(buttons) == 21
        assert axes == pytest.approx([1.0, 16384 / 32767, -1.0, 0.0, 0.0, -1.0], abs=1e-12)

        # SDL maps a virtual trigger's full raw range onto 0..32767: raw 0 is half pressed.
        pad.raw_axis(5, 0)
        assert gamepad.read()[0][5] == pytest.approx(-16383 / 32767, abs=1e-12)


def test_buttons_come_in_sdl_game_controller_order(sdl):
    pad = sdl()
    with SdlGamepad(pad.index) as gamepad:
        assert gamepad.read()[1] == [0] * 21
        for button in (0, 6, 9, 14, 16):  # A, START, LB, DPAD_RIGHT, PADDLE1
            pad.raw_button(button, True)
        expected = [0] * 21
        for button in (0, 6, 9, 14, 16):
            expected[button] = 1
        assert gamepad.read()[1] == expected
        pad.raw_button(9, False)
        expected[9] = 0
        assert gamepad.read()[1] == expected


def test_order_follows_the_controller_mapping_not_the_raw_device(sdl):
    # A pad whose raw inputs are wired in reverse: the reader must still put A and LEFTX first,
    # which is what makes a YAML mapping portable between pads (and matches game_controller_node).
    pad = sdl(b"Scrambled Pad")
    last_button, last_axis = len(CONTROLLER_BUTTONS) - 1, N_AXES - 1
    mapping = ",".join(
        [pad.guid(), "Scrambled Pad"]
        + [f"{name}:b{last_button - i}" for i, name in enumerate(CONTROLLER_BUTTONS)]
        + [f"{name}:a{last_axis - i}" for i, name in enumerate(CONTROLLER_AXES)]
    )
    assert sdl2.SDL_GameControllerAddMapping(mapping.encode()) >= 0, sdl2.SDL_GetError()
    with SdlGamepad("scrambled") as gamepad:
        for raw in range(N_AXES):
            pad.raw_axis(raw, 0)
        pad.raw_axis(0, -32768)  # raw a0 = right trigger, released
        pad.raw_axis(1, 32767)  # raw a1 = left trigger, fully pressed
        pad.raw_axis(5, -32768)  # raw a5 = left stick x, fully left
        pad.raw_button(last_button, True)  # = A
        pad.raw_button(last_button - 9, True)  # = LB
        axes, buttons = gamepad.read()
        assert axes == pytest.approx([1.0, 0.0, 0.0, 0.0, -1.0, 0.0], abs=1e-12)
        assert [i for i, b in enumerate(buttons) if b] == [0, 9]


def test_device_by_index_or_name_substring(sdl):
    sdl(b"First Pad")
    second = sdl(b"Second Pad")
    with SdlGamepad("second") as by_name, SdlGamepad(second.index) as by_index:
        assert by_name.name == by_index.name == "Second Pad"
        second.raw_button(1, True)
        assert by_name.read()[1][1] == by_index.read()[1][1] == 1


def test_missing_device_lists_what_is_connected(sdl):
    with pytest.raises(GamepadError, match="connected joysticks: none"):
        SdlGamepad(0)
    sdl(b"PLD Test Pad")
    with pytest.raises(GamepadError) as info:
        SdlGamepad("flightstick")
    assert "'flightstick'" in str(info.value)
    assert "0: PLD Test Pad (game controller)" in str(info.value)
    with pytest.raises(GamepadError, match="no game controller at index 3"):
        SdlGamepad(3)


def test_unplug_is_reported(sdl):
    pad = sdl()
    with SdlGamepad(pad.index) as gamepad:
        pad.raw_button(0, True)
        assert gamepad.read()[1][0] == 1
        pad.unplug()
        with pytest.raises(GamepadDisconnected, match="'PLD Test Pad' was disconnected"):
            gamepad.read()


def test_closing_leaves_sdl_to_other_users(sdl):
    pad = sdl()
    SdlGamepad(pad.index).close()
    assert sdl2.SDL_WasInit(SUBSYSTEMS) == SUBSYSTEMS
    assert sdl2.SDL_NumJoysticks() == 1
