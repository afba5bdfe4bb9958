"""A plain drop-in: one Agent with two function tools, served as model ``WeatherAgent``.

The agent sets no model, so it runs on celgate's ``--agents-model``. The
weather data is made up so the example works offline.
"""

from agents import Agent, function_tool

__celgate__ = {"description": "Current weather and unit conversion (demo data)."}

_WEATHER_C = {"paris": (21.0, "sunny"), "london": (15.5, "light rain"), "tokyo": (26.0, "humid")}


@function_tool
def get_weather(location: str) -> str:
    """Current temperature (Celsius) and conditions in a city."""
    celsius, conditions = _WEATHER_C.get(location.strip().lower(), (18.0, "clear"))
    return f"{location}: {celsius:.1f} C, {conditions}"


@function_tool
def convert_units(celsius: float) -> str:
    """Convert a temperature from Celsius to Fahrenheit."""
    return f"{celsius:.1f} C = {celsius * 9 / 5 + 32:.1f} F"


agent = Agent(
    name="WeatherAgent",
    instructions=(
        "You answer questions about the weather. Use get_weather for current conditions and "
        "convert_units when the user wants Fahrenheit. Keep answers short."
    ),
    tools=[get_weather, convert_units],
)
